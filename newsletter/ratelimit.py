"""Rate limits (public forms, staff logins, API tokens): at most N hits per key within
a sliding window.

One interface, two implementations:

* `MemoryRateLimiter` keeps the hits in this process (the embedded default; each
  web process then counts on its own);
* `RedisRateLimiter` keeps them in Redis, shared by every web process, checked and
  recorded atomically by one Lua script.

Both are sliding logs: a hit is allowed when fewer than `limit.count` hits were
allowed within the last `limit.window_seconds`, and a refused hit is not recorded, so
hammering a limit does not push its end further away. A refusal says how long until
the oldest counted hit leaves the window (the Retry-After of an HTTP 429).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from newsletter.errors import NewsletterError

Clock = Callable[[], float]


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


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class MemoryRateLimiter:
    """Counts in this process; thread-safe. Forgets keys whose window has passed."""

    SWEEP_EVERY = 1000  # hits between sweeps of idle keys (bounds the memory)

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[tuple[str, str], tuple[float, deque[float]]] = {}
        self._lock = threading.Lock()
        self._since_sweep = 0

    def hit(self, limit: Limit, key: str) -> Decision:
        now = self._clock()
        with self._lock:
            self._sweep_now_and_then(now)
            _, hits = self._hits.setdefault((limit.name, key), (limit.window_seconds, deque()))
            while hits and hits[0] <= now - limit.window_seconds:
                hits.popleft()
            if len(hits) >= limit.count:
                wait = _retry_after(hits[0] + limit.window_seconds - now)
                return Decision(False, wait, 0, wait)
            hits.append(now)
            reset = _retry_after(hits[0] + limit.window_seconds - now)
            return Decision(True, 0, limit.count - len(hits), reset)

    def _sweep_now_and_then(self, now: float) -> None:
        self._since_sweep += 1
        if self._since_sweep < self.SWEEP_EVERY:
            return
        self._since_sweep = 0
        idle = [
            k for k, (window, hits) in self._hits.items() if not hits or hits[-1] <= now - window
        ]
        for k in idle:
            del self._hits[k]


# KEYS[1] the sorted set of one key's hits (score = time in ms);
# ARGV: now (ms), window (ms), count, a unique member for this hit.
# Returns {allowed (1 or 0), ms until the oldest counted hit expires, hits counted}.
_SLIDING_LOG = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local allowed = 0
if redis.call('ZCARD', key) < tonumber(ARGV[3]) then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('PEXPIRE', key, window)
  allowed = 1
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {allowed, tonumber(oldest[2]) + window - now, redis.call('ZCARD', key)}
"""


class RedisRateLimiter:
    """Counts in Redis, shared by every process that uses the same `prefix`.

    Keys are `<prefix><limit name>:<sha256 of the key>`, so no address or IP is
    stored in Redis in the clear. Time comes from `clock` (wall-clock seconds, the
    same on every web host when their clocks are synchronised).
    Raises RateLimiterUnavailableError when Redis does not answer.
    """

    def __init__(
        self, client: redis.Redis, prefix: str = "newsletter:ratelimit:", clock: Clock = time.time
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._script = client.register_script(_SLIDING_LOG)

    @classmethod
    def from_url(cls, url: str, prefix: str = "newsletter:ratelimit:") -> RedisRateLimiter:
        client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, prefix)

    def _key(self, limit: Limit, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
        return f"{self._prefix}{limit.name}:{digest}"

    def hit(self, limit: Limit, key: str) -> Decision:
        now_ms = int(self._clock() * 1000)
        window_ms = max(1, int(limit.window_seconds * 1000))
        member = f"{now_ms}:{secrets.token_hex(6)}"
        try:
            allowed, wait_ms, counted = self._script(
                keys=[self._key(limit, key)], args=[now_ms, window_ms, limit.count, member]
            )
        except redis.RedisError as exc:
            raise RateLimiterUnavailableError(f"rate limits unavailable: {exc}") from exc
        reset = _retry_after(int(wait_ms) / 1000)
        if allowed:
            return Decision(True, 0, max(0, limit.count - int(counted)), reset)
        return Decision(False, reset, 0, reset)


def make_rate_limiter(redis_url: str) -> RateLimiter:
    """Redis when a URL is given (limits shared by all web processes), else in-process."""
    if redis_url:
        return RedisRateLimiter.from_url(redis_url)
    return MemoryRateLimiter()
