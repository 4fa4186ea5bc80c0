"""Filling a snapshot for people to look at: previews and the web archive."""

from __future__ import annotations

import html
import re

from newsletter.rendering.model import Snapshot
from newsletter.rendering.slots import SlotTemplate, sentinel, slot_values

SAMPLE_VALUES = {
    "name": "Alex",
    "email": "alex@example.org",
    "unsubscribe_url": "#unsubscribe",
    "preferences_url": "#preferences",
    "tracking_note": "(How this email counts opens and clicks, as its list is set.)",
}
# The parts of an email that are the reader's own (the greeting, why they get it, their
# unsubscribe and preferences links) sit between these markers (templates/email/).
_READER_PART = re.compile(r"<!--nl:reader-->.*?<!--nl:/reader-->", re.DOTALL)
ARCHIVE_NOTE = (
    '<p class="footer-why">This is the web copy of an email sent to the subscribers of '
    "this list. Each subscriber's own copy has their unsubscribe and preferences links.</p>"
)


def fill_html(snapshot: Snapshot, values: dict[str, str] | None = None) -> str:
    """The snapshot's HTML with every slot filled as the email fills it.

    A slot takes its value (sample values when none are given), or its fallback when
    that value is empty or missing, or "" when it has neither.
    """
    filled = SAMPLE_VALUES if values is None else values
    return _fill(snapshot.html, snapshot.fallbacks, filled, snapshot.marker)


def _fill(text: str, fallbacks: dict[str, str], values: dict[str, str], marker: str) -> str:
    template = SlotTemplate.compile(text, marker)
    merged = dict.fromkeys(template.keys, "")
    merged.update(slot_values(fallbacks, values))
    return template.fill({k: html.escape(v) for k, v in merged.items()})


def archive_html(snapshot: Snapshot) -> str:
    """The email as the public archive shows it: no reader's greeting, address or
    links (a sentence says where readers find theirs), other slots at their fallbacks
    ("" for a link a stored template wrote outside the footer)."""
    unsubscribe = sentinel("unsubscribe_url", snapshot.marker)

    def without_reader(match: re.Match[str]) -> str:
        # The footer's reader part becomes a sentence; the greeting goes.
        return ARCHIVE_NOTE if unsubscribe in match.group(0) else ""

    public = _READER_PART.sub(without_reader, snapshot.html)
    return _fill(public, snapshot.fallbacks, {}, snapshot.marker)


def archive_subject(snapshot: Snapshot) -> str:
    """The subject as the archive lists it: slots at the subject's own fallbacks."""
    template = SlotTemplate.compile(snapshot.subject, snapshot.marker)
    values = dict.fromkeys(template.keys, "")
    values.update(snapshot.subject_slot_fallbacks)
    return template.fill(values)
