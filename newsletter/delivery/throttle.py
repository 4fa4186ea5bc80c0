"""Rate limits shared by every worker: a global ceiling and per-domain ceilings.

Token buckets refill at `rate` messages per second up to a burst of one second's
worth. With Redis the buckets live in Redis (atomic Lua calls shared by all workers on
all machines, each taking a small batch of tokens); without it, in this process. A
domain that answered 421 or "slow down" is paused for a while (`slow_down`) and its
deliveries deferred, so the run goes on with the other domains.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import redis

log = logging.getLogger(__name__)
PAUSE_CACHE_SECONDS = 0.5

# Takes ARGV[4] tokens when the bucket holds them: returns {tokens taken, seconds to
# wait until it does}. Waiting for a whole batch keeps a busy ceiling to one call a batch.
_TAKE_TOKENS = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local taken = 0
local wait = 0
if tokens >= want then
  taken = want
  tokens = tokens - taken
else
  wait = (want - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(1000 * (burst / rate + 1)))
return {tostring(taken), tostring(wait)}
"""
# A process takes the tokens of up to this long at a time (at most MAX_BATCH), so a
# ceiling costs one Redis call per batch rather than per message; tokens it has not
# used by then lapse, so an idle process never comes back with a burst of its own.
BATCH_SECONDS = 0.02
MAX_BATCH = 50


class Throttle(Protocol):
    def wait_turn(self, domain: str) -> None:
        """Block until one more message may go to `domain` under every ceiling."""

    def slow_down(self, domain: str, seconds: float) -> None:
        """Send nothing to `domain` for `seconds` (it asked us to back off)."""

    def paused_for(self, domain: str) -> float:
        """Seconds until `domain` may be tried again; 0 when it is not paused."""

    def wait_rate(self, key: str, rate: float) -> None:
        """Block until one more message may go under the ceiling `key` at `rate`."""


@dataclass
class _Bucket:
    rate: float
    tokens: float
    at: float

    def take(self, now: float) -> float:
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class LocalThrottle:
    """The same limits for one process (embedded default, tests)."""

    rate: float = 0.0
    domain_rates: dict[str, float] = field(default_factory=dict)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _paused: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _take(self, key: str, rate: float) -> float:
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(key, _Bucket(rate, rate, now))
            return bucket.take(now)

    def wait_turn(self, domain: str) -> None:
        for key, rate in (("*", self.rate), (domain, self.domain_rates.get(domain, 0.0))):
            while rate > 0 and (wait := self._take(key, rate)) > 0:
                time.sleep(wait)

    def wait_rate(self, key: str, rate: float) -> None:
        """Block until one more message may go under the ceiling `key` (a relay's)."""
        while rate > 0 and (wait := self._take(key, rate)) > 0:
            time.sleep(wait)

    def slow_down(self, domain: str, seconds: float) -> None:
        with self._lock:
            self._paused[domain] = time.monotonic() + seconds

    def paused_for(self, domain: str) -> float:
        with self._lock:
            return max(0.0, self._paused.get(domain, 0.0) - time.monotonic())


class RedisThrottle:
    """Limits shared through Redis by all workers."""

    def __init__(self, client: redis.Redis, rate: float, domain_rates: dict[str, float]) -> None:
        self.client = client
        self.rate = rate
        self.domain_rates = domain_rates
        self._take = client.register_script(_TAKE_TOKENS)
        # bucket key → (tokens taken and not used yet, when they lapse)
        self._reserves: dict[str, tuple[int, float]] = {}
        # domain → (checked at, paused until), so a pause costs one Redis call per
        # domain every half second rather than one per message.
        self._pauses: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _wait(self, key: str, rate: float) -> None:
        with self._lock:  # sending threads of one process share the reserves
            left, lapses = self._reserves.get(key, (0, 0.0))
            if left > 0 and time.monotonic() < lapses:
                self._reserves[key] = (left - 1, lapses)
                return
        want = max(1, min(MAX_BATCH, int(rate * BATCH_SECONDS)))
        while True:
            try:
                taken, wait = self._take(keys=[key], args=[rate, max(rate, 1.0), time.time(), want])
            except redis.RedisError as exc:
                # Redis is only an aid here: the ledger decides who gets mail. Without
                # it we send unthrottled rather than stop, and say so.
                log.warning("rate limiter unavailable (%s); sending without it", exc)
                return
            if int(taken) > 0:
                with self._lock:
                    self._reserves[key] = (int(taken) - 1, time.monotonic() + BATCH_SECONDS)
                return
            time.sleep(float(wait))

    def wait_turn(self, domain: str) -> None:
        if self.rate > 0:
            self._wait("newsletter:rate:*", self.rate)
        domain_rate = self.domain_rates.get(domain, 0.0)
        if domain_rate > 0:
            self._wait(f"newsletter:rate:{domain}", domain_rate)

    def wait_rate(self, key: str, rate: float) -> None:
        """Block until one more message may go under the ceiling `key` (a relay's),
        shared by every worker."""
        self._wait(f"newsletter:rate:{key}", rate)

    def slow_down(self, domain: str, seconds: float) -> None:
        now = time.monotonic()
        self._pauses[domain] = (now, now + seconds)
        try:
            self.client.set(f"newsletter:paused:{domain}", "1", px=max(1, int(seconds * 1000)))
        except redis.RedisError as exc:
            log.warning("cannot share the pause of %s (%s)", domain, exc)

    def paused_for(self, domain: str) -> float:
        now = time.monotonic()
        checked, until = self._pauses.get(domain, (-1.0, 0.0))
        if now - checked > PAUSE_CACHE_SECONDS:
            try:
                remaining = int(self.client.pttl(f"newsletter:paused:{domain}"))
            except redis.RedisError:
                remaining = -1
            until = max(until, now + remaining / 1000) if remaining > 0 else until
            self._pauses[domain] = (now, until)
        return max(0.0, until - now)


def make_throttle(redis_url: str, rate: float, domain_rates: dict[str, float]) -> Throttle:
    if redis_url:
        return RedisThrottle(redis.Redis.from_url(redis_url), rate, domain_rates)
    return LocalThrottle(rate, dict(domain_rates))
