"""Filling a snapshot for people to look at: previews and the web archive."""

from __future__ import annotations

import html

from newsletter.rendering.model import Snapshot
from newsletter.rendering.slots import SlotTemplate, slot_values

SAMPLE_VALUES = {
    "name": "Alex",
    "email": "alex@example.org",
    "unsubscribe_url": "#unsubscribe",
    "preferences_url": "#preferences",
}


def fill_html(snapshot: Snapshot, values: dict[str, str] | None = None) -> str:
    """The snapshot's HTML with every slot filled as the email fills it.

    A slot takes its value (sample values when none are given), or its fallback when
    that value is empty or missing, or "" when it has neither.
    """
    template = SlotTemplate.compile(snapshot.html, snapshot.marker)
    merged = dict.fromkeys(template.keys, "")
    merged.update(slot_values(snapshot.fallbacks, SAMPLE_VALUES if values is None else values))
    return template.fill({k: html.escape(v) for k, v in merged.items()})
