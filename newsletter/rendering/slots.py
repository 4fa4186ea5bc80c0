"""Per-recipient slots: placeholders rendered once per run, filled per recipient.

A template calls `slot("name", "reader")`; the render-once step leaves a sentinel
(`__slot_3F9A0C21B7E4_name__`) in the output, and the per-recipient step splits the
text once into literal parts and slot keys, then fills it with a list assignment and
one join. Filling costs a few microseconds whatever the size of the stylesheet or the
number of articles.

Each render draws a random *marker* (upper-case hex) that every sentinel of that
render carries, and only sentinels with the render's marker are filled. Content
(articles, feed items, titles, image URLs) cannot know the marker, so text in it that
looks like a sentinel stays text: it can never be filled with a reader's address or
personal links. Snapshots frozen before markers existed have the marker "" and the
old sentinels (`__slot_name__`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from markupsafe import Markup

from newsletter.errors import InvalidInputError

# A key is lowercase words joined by single underscores, optionally followed by
# ".attribute" (words of letters, digits and "-", joined the same way). No key holds
# "__" or ends in "_", so a sentinel's closing "__" is never read as part of its key:
# "__slot_name____slot_email__" is two slots and "__slot_email___2026" is one slot
# followed by "_2026".
_KEY = r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*(?:\.[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*)?"
KEY_PATTERN = re.compile(_KEY)
_MARKER = re.compile(r"[0-9A-F]{12}")


@lru_cache(maxsize=256)
def slot_pattern(marker: str = "") -> re.Pattern[str]:
    """The sentinels of one render (`marker`), or the old unmarked ones ("")."""
    if marker and not _MARKER.fullmatch(marker):
        raise ValueError(f"not a slot marker: {marker!r}")
    prefix = f"__slot_{marker}_" if marker else "__slot_"
    return re.compile(rf"{prefix}({_KEY})__")


# Sentinels without a marker: those of snapshots frozen before markers existed.
SLOT_PATTERN = slot_pattern()


def new_marker() -> str:
    """A fresh random marker for one render (48 bits; it never starts a slot key)."""
    return secrets.token_hex(6).upper()


# Fixed per-recipient keys; `attr.<key>` reads a subscriber attribute.
# `tracking_note` is the footer's sentence on how this message counts opens and clicks.
RECIPIENT_KEYS = frozenset(
    {"name", "email", "unsubscribe_url", "preferences_url", "next_url", "tracking_note"}
)
ATTRIBUTE_PREFIX = "attr."
# The per-recipient part of tracked links and the pixel (rendering/tracking.py): written
# by the tracking step only, never by a template.
TRACK_KEY = "track"


def sentinel(key: str, marker: str = "") -> str:
    """What a template leaves where a recipient's value goes, in a render with `marker`."""
    if not is_known_key(key) and key != TRACK_KEY:
        raise InvalidInputError(
            f"unknown slot {key!r}: use one of {sorted(RECIPIENT_KEYS)} or attr.<attribute> "
            "(letters, digits and '-', with single '_' between them)"
        )
    return f"__slot_{marker}_{key}__" if marker else f"__slot_{key}__"


def is_known_key(key: str) -> bool:
    """A recipient key or `attr.<attribute>` that SLOT_PATTERN reads back whole."""
    if key in RECIPIENT_KEYS:
        return True
    return key.startswith(ATTRIBUTE_PREFIX) and KEY_PATTERN.fullmatch(key) is not None


def slot_values(fallbacks: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """Each slot's value: the given one, or the slot's fallback when it is empty or missing.

    The one rule for email and web alike, so the archive shows what the email said.
    """
    merged = dict(fallbacks)
    merged.update({k: v for k, v in values.items() if v})
    return merged


@dataclass(frozen=True)
class SlotTemplate:
    """Text split at its slots: parts[0], key[0], parts[1], key[1], …, parts[n]."""

    parts: tuple[str, ...]
    keys: tuple[str, ...]

    @classmethod
    def compile(cls, text: str, marker: str = "") -> SlotTemplate:
        """`text` split at the sentinels of the render with `marker` (only those)."""
        pieces = slot_pattern(marker).split(text)
        return cls(parts=tuple(pieces[0::2]), keys=tuple(pieces[1::2]))

    def map_parts(self, transform: Callable[[str], str]) -> SlotTemplate:
        """The same slots around transformed literal parts (e.g. pre-encoded)."""
        return SlotTemplate(tuple(transform(p) for p in self.parts), self.keys)

    def fill(self, values: Mapping[str, str]) -> str:
        """Every slot replaced by `values[key]`; a missing key raises KeyError."""
        out = [""] * (2 * len(self.keys) + 1)
        out[0::2] = self.parts
        out[1::2] = [values[k] for k in self.keys]
        return "".join(out)


def find_unfilled(text: str, marker: str = "") -> list[str]:
    """Slot keys of the render with `marker` still present in `text` (a filled message
    must have none)."""
    return slot_pattern(marker).findall(text)


class SlotRecorder:
    """The `slot()` function templates call: leaves a sentinel carrying the render's
    marker and remembers each slot's fallback (the value shown when the recipient's
    is empty)."""

    def __init__(self, marker: str = "") -> None:
        self.marker = marker
        self.fallbacks: dict[str, str] = {}

    def __call__(self, key: str, fallback: str = "") -> Markup:
        if key == TRACK_KEY:
            raise InvalidInputError(f"slot {key!r} is written by link tracking, not by templates")
        # One value per key and recipient, so one fallback per key; a call without a
        # fallback shares the one given elsewhere.
        previous = self.fallbacks.get(key, "")
        if fallback and previous and previous != fallback:
            raise InvalidInputError(f"slot {key!r} has two fallbacks: {previous!r}, {fallback!r}")
        self.fallbacks[key] = fallback or previous
        return Markup(sentinel(key, self.marker))
