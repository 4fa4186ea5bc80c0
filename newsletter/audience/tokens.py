"""Signed tokens for subscriber-facing links (confirm, unsubscribe, preferences).

A token is `<payload>.<signature>`, both base64url. The payload names its purpose,
so an unsubscribe token cannot be used to confirm, and the HMAC-SHA256 signature
(truncated to 128 bits) is keyed by the service's secret. Signing costs ~2 µs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass
from enum import StrEnum

from newsletter.errors import InvalidInputError


class Purpose(StrEnum):
    confirm = "c"
    unsubscribe = "u"
    preferences = "p"
    next_step = "n"  # "send me the next one now" (the scope is a sequence id)


_CODES = {purpose: purpose.value for purpose in Purpose}  # (an enum's .value is slow)


class InvalidTokenError(InvalidInputError):
    pass


@dataclass(frozen=True)
class TokenClaims:
    purpose: Purpose
    subscriber_id: int
    # What the link is about: a list (confirm, unsubscribe, preferences) or, for a
    # next-step link, a drip sequence. Read it as `list_id` or `sequence_id`.
    scope: int
    expires_at: int  # unix seconds; 0 = never
    # A confirmation link may name several lists (one link confirms all the lists one
    # signup asked for); `scope` is then the first of them.
    scopes: tuple[int, ...] = ()

    @property
    def list_ids(self) -> tuple[int, ...]:
        """Every list the link names (confirm links may name several)."""
        if self.purpose is Purpose.next_step:
            raise InvalidTokenError("a next-step link names a sequence, not a list")
        return self.scopes or (self.scope,)

    @property
    def list_id(self) -> int:
        if self.purpose is Purpose.next_step:
            raise InvalidTokenError("a next-step link names a sequence, not a list")
        return self.scope

    @property
    def sequence_id(self) -> int:
        if self.purpose is not Purpose.next_step:
            raise InvalidTokenError("only a next-step link names a sequence")
        return self.scope


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    """base64url without padding (what urlsafe_b64encode gives, minus its Python layers)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(secret_key: str) -> bytes:
    return hashlib.sha256(b"newsletter-tokens:" + secret_key.encode()).digest()


class TokenSigner:
    """Signs with the current key; verifies with it or any of the old keys, so links
    already sent keep working while a key is rotated out."""

    def __init__(self, secret_key: str, old_keys: tuple[str, ...] = ()) -> None:
        self._key = _derive(secret_key)
        self._old = tuple(_derive(key) for key in old_keys)

    def _signature(self, payload: str, key: bytes | None = None) -> str:
        return _b64(hmac.digest(key or self._key, payload.encode("ascii"), "sha256")[:16])

    def _genuine(self, payload: str, signature: str) -> bool:
        return any(
            hmac.compare_digest(signature, self._signature(payload, key))
            for key in (self._key, *self._old)
        )

    def sign(self, purpose: Purpose, subscriber_id: int, scope: int, ttl_seconds: int = 0) -> str:
        """A token for `subscriber_id` about `scope` (a list id; a sequence id for
        next_step), expiring after `ttl_seconds` (0: never)."""
        expires = int(time.time()) + ttl_seconds if ttl_seconds else 0
        payload = _b64(f"{_CODES[purpose]}:{subscriber_id}:{scope}:{expires}".encode("ascii"))
        return f"{payload}.{self._signature(payload)}"

    def sign_lists(
        self, purpose: Purpose, subscriber_id: int, list_ids: tuple[int, ...], ttl_seconds: int = 0
    ) -> str:
        """A token naming several lists (read back as `TokenClaims.list_ids`)."""
        if not list_ids or purpose is Purpose.next_step:
            raise InvalidInputError("a token names at least one list")
        expires = int(time.time()) + ttl_seconds if ttl_seconds else 0
        scopes = ".".join(str(int(list_id)) for list_id in list_ids)
        payload = _b64(f"{_CODES[purpose]}:{subscriber_id}:{scopes}:{expires}".encode("ascii"))
        return f"{payload}.{self._signature(payload)}"

    def verify(self, token: str, purpose: Purpose, now: float | None = None) -> TokenClaims:
        """The claims of a genuine, unexpired token of this purpose, else InvalidTokenError."""
        # A token comes from a URL: anything but ASCII is not ours (and would make the
        # ASCII encoding of the payload and compare_digest on str raise).
        if not token.isascii():
            raise InvalidTokenError("this link is not valid (it may be incomplete)")
        payload, _, signature = token.partition(".")
        if not payload or not self._genuine(payload, signature):
            raise InvalidTokenError("this link is not valid (it may be incomplete)")
        try:
            kind, subscriber, scope, expires = _unb64(payload).decode("ascii").split(":")
            scopes = tuple(int(s) for s in scope.split(".")) if "." in scope else ()
            first = scopes[0] if scopes else int(scope)
            claims = TokenClaims(Purpose(kind), int(subscriber), first, int(expires), scopes)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidTokenError("this link is not valid") from exc
        if claims.purpose is not purpose:
            raise InvalidTokenError("this link is meant for something else")
        if claims.expires_at and claims.expires_at < (now if now is not None else time.time()):
            raise InvalidTokenError("this link has expired")
        return claims
