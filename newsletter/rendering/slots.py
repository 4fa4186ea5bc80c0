"""Per-recipient slots: placeholders rendered once per run, filled per recipient.

A template calls `slot("name", "reader")`; the render-once step leaves a sentinel
(`__slot_name__`) in the output, and the per-recipient step splits the text once into
literal parts and slot keys, then fills it with a list assignment and one join.
Filling costs a few microseconds whatever the size of the stylesheet or the number
of articles.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from markupsafe import Markup

from newsletter.errors import InvalidInputError

# A key is lowercase words joined by single underscores, optionally followed by
# ".attribute" (words of letters, digits and "-", joined the same way). No key holds
# "__" or ends in "_", so a sentinel's closing "__" is never read as part of its key:
# "__slot_name____slot_email__" is two slots and "__slot_email___2026" is one slot
# followed by "_2026".
_KEY = r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*(?:\.[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*)?"
KEY_PATTERN = re.compile(_KEY)
SLOT_PATTERN = re.compile(rf"__slot_({_KEY})__")

# Fixed per-recipient keys; `attr.<key>` reads a subscriber attribute.
RECIPIENT_KEYS = frozenset({"name", "email", "unsubscribe_url", "preferences_url", "next_url"})
ATTRIBUTE_PREFIX = "attr."


def sentinel(key: str) -> str:
    """The marker a template leaves where a recipient's value goes."""
    if not is_known_key(key):
        raise InvalidInputError(
            f"unknown slot {key!r}: use one of {sorted(RECIPIENT_KEYS)} or attr.<attribute> "
            "(letters, digits and '-', with single '_' between them)"
        )
    return f"__slot_{key}__"


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
    def compile(cls, text: str) -> SlotTemplate:
        pieces = SLOT_PATTERN.split(text)
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


def find_unfilled(text: str) -> list[str]:
    """Slot keys still present in `text` (a filled message must have none)."""
    return SLOT_PATTERN.findall(text)


class SlotRecorder:
    """The `slot()` function templates call: leaves a sentinel and remembers each
    slot's fallback (the value shown when the recipient's is empty)."""

    def __init__(self) -> None:
        self.fallbacks: dict[str, str] = {}

    def __call__(self, key: str, fallback: str = "") -> Markup:
        # One value per key and recipient, so one fallback per key; a call without a
        # fallback shares the one given elsewhere.
        previous = self.fallbacks.get(key, "")
        if fallback and previous and previous != fallback:
            raise InvalidInputError(f"slot {key!r} has two fallbacks: {previous!r}, {fallback!r}")
        self.fallbacks[key] = fallback or previous
        return Markup(sentinel(key))
