"""Rate limits (public forms, logins, the staff API): at most N hits per key within a
moving window.

The counting is the `limits` library's moving window (a log of hits per key, a hit
allowed when fewer than `count` were allowed in the last `window_seconds`; a refused
hit is not recorded, so hammering a limit does not push its end further away), kept
in memory (the embedded default; each web process then counts on its own) or in
Redis (shared by every web process, checked and recorded atomically by the library's
Lua script). A refusal says how long until the oldest counted hit leaves the window
(the Retry-After of an HTTP 429).

Keys are hashed before they reach the store, so no address or IP is kept in Redis in
the clear.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Protocol

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from newsletter.errors import NewsletterError

REDIS_TIMEOUT_SECONDS = 2.0


class RateLimiterUnavailableError(NewsletterError):
    """The shared store of a rate limiter did not answer; nothing was counted."""


@dataclass(frozen=True)
class Limit:
    """At most `count` hits per key in any `window_seconds`; `name` scopes the keys."""

    name: str
    count: int
    window_seconds: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # whole seconds until a hit would be allowed; 0 when allowed
    remaining: int = 0  # hits still allowed in the window after this one
    reset_after: int = 0  # whole seconds until the oldest counted hit leaves the window


class RateLimiter(Protocol):
    def hit(self, limit: Limit, key: str) -> Decision:
        """Count one hit of `key` against `limit` if it is allowed; say whether it was."""
        ...


def _item(limit: Limit) -> RateLimitItem:
    # The library counts whole seconds; a window is never shorter than one.
    return RateLimitItemPerSecond(limit.count, max(1, round(limit.window_seconds)))


def _hashed(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


class WindowRateLimiter:
    """Moving-window limits over a `limits` storage (memory or Redis).

    Raises RateLimiterUnavailableError when the storage does not answer.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._strategy = MovingWindowRateLimiter(storage)

    def hit(self, limit: Limit, key: str) -> Decision:
        item, hashed = _item(limit), _hashed(key)
        try:
            allowed = self._strategy.hit(item, limit.name, hashed)
            stats = self._strategy.get_window_stats(item, limit.name, hashed)
        except StorageError as exc:
            raise RateLimiterUnavailableError(
                f"rate limits unavailable: {exc.storage_error}"
            ) from exc
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        if allowed:
            return Decision(True, 0, stats.remaining, reset)
        return Decision(False, reset, 0, reset)


class MemoryRateLimiter(WindowRateLimiter):
    """Counts in this process; thread-safe."""

    def __init__(self) -> None:
        super().__init__(MemoryStorage(wrap_exceptions=True))


class RedisRateLimiter(WindowRateLimiter):
    """Counts in Redis, shared by every process that uses the same `prefix`."""

    @classmethod
    def from_url(cls, url: str, prefix: str = "newsletter-ratelimit") -> RedisRateLimiter:
        storage = RedisStorage(
            url,
            key_prefix=prefix,
            wrap_exceptions=True,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        return cls(storage)


def make_rate_limiter(redis_url: str) -> RateLimiter:
    """Redis when a URL is given (limits shared by all web processes), else in-process."""
    if redis_url:
        return RedisRateLimiter.from_url(redis_url)
    return MemoryRateLimiter()
