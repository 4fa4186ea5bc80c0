"""Tracked-link and pixel tokens: `<link part>.<recipient part>`, both base64url.

The link part names (run, link) and is signed once per run and link, when the run's
email is compiled; the recipient part names the message (a ledger row in individual
mode, a random number in anonymous mode), the recipient's list and the second the
message was handed over, and is signed with the run: one HMAC per recipient, filled
into the email as one slot, however many links it has. Each part's signature covers
the run, so parts of two runs do not combine, and changing any byte of either makes
the token worthless (the request is answered 404 and counts nothing).

In anonymous mode the random number is written nowhere but in the email: an event
can tell its message from others (unique counts), never whose it was.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass

from newsletter.errors import InvalidInputError

_LINK = struct.Struct(">II")  # run id, link id (0: the open pixel)
_RECIPIENT = struct.Struct(">BQII")  # individual?, delivery id or nonce, list id, sent at
_RUN = struct.Struct(">I")
_SIG = 8  # bytes of HMAC-SHA256 kept: 64 bits
_URLSAFE = bytes.maketrans(b"+/", b"-_")
PIXEL = 0  # the link id of the open pixel
LINK_PART_LENGTH = 22  # base64url characters of (8 + 8) bytes
RECIPIENT_PART_LENGTH = 34  # of (17 + 8) bytes


class InvalidTrackingToken(InvalidInputError):
    """Not a token we made (forged, altered, truncated)."""


@dataclass(frozen=True)
class TrackedHit:
    """What a genuine token says."""

    run_id: int
    link_id: int  # PIXEL for an open
    individual: bool
    ident: int  # the delivery id (individual) or the message's random number
    list_id: int
    sent_at: int  # unix seconds the message was handed over (0: unknown)

    @property
    def message_key(self) -> str:
        return f"d{self.ident}" if self.individual else f"a{self.ident:016x}"

    @property
    def delivery_id(self) -> int | None:
        return self.ident if self.individual else None


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(secret_key: str) -> bytes:
    return hashlib.sha256(b"newsletter-tracking:" + secret_key.encode()).digest()


def new_nonce() -> int:
    """A message's random number in anonymous mode (64 bits, never stored with a person)."""
    return secrets.randbits(64)


class TrackingSigner:
    """Signs with the current key; verifies with it or an old one (key rotation)."""

    def __init__(self, secret_key: str, old_keys: tuple[str, ...] = ()) -> None:
        self._key = _derive(secret_key)
        self._keys = (self._key, *(_derive(k) for k in old_keys))

    def link_part(self, run_id: int, link_id: int) -> str:
        payload = _LINK.pack(run_id, link_id)
        return _b64(payload + hmac.digest(self._key, b"L" + payload, "sha256")[:_SIG])

    def recipient_part(
        self, run_id: int, individual: bool, ident: int, list_id: int, sent_at: int
    ) -> str:
        """One message's part (about 3 µs: one HMAC, a pack, base64)."""
        payload = _RECIPIENT.pack(individual, ident, list_id, sent_at)
        signed = b"R" + _RUN.pack(run_id) + payload
        return _b64(payload + hmac.digest(self._key, signed, "sha256")[:_SIG])

    def verify(self, token: str) -> TrackedHit:
        """The hit a genuine token names; InvalidTrackingToken for anything else."""
        link, dot, recipient = token.partition(".")
        if (
            not dot
            or len(link) != LINK_PART_LENGTH
            or len(recipient) != RECIPIENT_PART_LENGTH
            or not token.isascii()
        ):
            raise InvalidTrackingToken("not a tracking token")
        try:
            link_bytes, recipient_bytes = _unb64(link), _unb64(recipient)
        except (binascii.Error, ValueError) as exc:
            raise InvalidTrackingToken("not a tracking token") from exc
        link_payload, link_sig = link_bytes[: _LINK.size], link_bytes[_LINK.size :]
        run_id, link_id = _LINK.unpack(link_payload)
        payload, sig = recipient_bytes[: _RECIPIENT.size], recipient_bytes[_RECIPIENT.size :]
        signed = b"R" + _RUN.pack(run_id) + payload
        if not any(
            hmac.compare_digest(link_sig, hmac.digest(k, b"L" + link_payload, "sha256")[:_SIG])
            and hmac.compare_digest(sig, hmac.digest(k, signed, "sha256")[:_SIG])
            for k in self._keys
        ):
            raise InvalidTrackingToken("not a tracking token")
        individual, ident, list_id, sent_at = _RECIPIENT.unpack(payload)
        if individual not in (0, 1):
            raise InvalidTrackingToken("not a tracking token")
        return TrackedHit(run_id, link_id, bool(individual), ident, list_id, sent_at)
