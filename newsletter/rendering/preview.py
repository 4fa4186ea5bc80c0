"""Filling a snapshot for people to look at: previews and the web archive."""

from __future__ import annotations

import html

from newsletter.rendering.render import Snapshot
from newsletter.rendering.slots import SlotTemplate

SAMPLE_VALUES = {
    "name": "Alex",
    "email": "alex@example.org",
    "unsubscribe_url": "#unsubscribe",
    "preferences_url": "#preferences",
}


def fill_html(snapshot: Snapshot, values: dict[str, str] | None = None) -> str:
    """The snapshot's HTML with every slot filled (sample values, then fallbacks, then "")."""
    template = SlotTemplate.compile(snapshot.html)
    merged = {key: "" for key in template.keys}
    merged.update({k: v for k, v in snapshot.fallbacks.items() if v})
    merged.update(values if values is not None else SAMPLE_VALUES)
    return template.fill({k: html.escape(v) for k, v in merged.items()})
