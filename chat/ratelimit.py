"""Rate limits: token buckets per person and per client address, and a throttle for typing signals.

``Limits`` is what the app asks; ``LocalLimits`` keeps the buckets in this process, and
``chat.redis_limits.RedisLimits`` in Redis, shared by every instance. A ``Rate`` names its
rule, so a refusal can say which one it broke.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["Limits", "LocalLimits", "Rate", "RateLimiter", "Throttle"]


@dataclass(frozen=True, slots=True)
class Rate:
    """``rate`` tokens a second, at most ``burst`` saved up. ``name`` is the setting (the rule's
    name in errors), ``what`` what one token buys and per what ("writes per person")."""

    name: str
    rate: float
    burst: int
    what: str

    def describe(self) -> str:
        if self.rate >= 1:
            return f"{self.rate:g} a second, bursts of {self.burst}"
        return f"one every {1 / self.rate:g} s, bursts of {self.burst}"


class Limits(ABC):
    @abstractmethod
    async def take(self, rate: Rate, key: str) -> float:
        """Spend one of ``key``'s tokens of ``rate``: 0.0 if allowed, else the seconds to wait."""

    @abstractmethod
    async def typing(self, room: str, user_id: str) -> bool:
        """May this "typing" signal go out (or is it too close to the previous one)?"""


class LocalLimits(Limits):
    def __init__(self, typing_interval: float) -> None:
        self.limiters: dict[Rate, RateLimiter] = {}
        self.throttle = Throttle(typing_interval)

    async def take(self, rate: Rate, key: str) -> float:
        limiter = self.limiters.get(rate)
        if limiter is None:
            limiter = self.limiters[rate] = RateLimiter(rate.rate, rate.burst)
        return limiter.take(key)

    async def typing(self, room: str, user_id: str) -> bool:
        return self.throttle.allow((room, user_id))


class RateLimiter:
    """``rate`` tokens a second, at most ``burst`` saved up; :meth:`take` says how long to wait."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: Hashable) -> float:
        """Spend one token: 0.0 if allowed, else the seconds until one is available."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 10_000:
                self._forget_full(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket: drop it, so memory stays bounded.
        full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]


class Throttle:
    """Lets one event per key through every ``interval`` seconds; the rest are dropped."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[Hashable, float] = {}

    def allow(self, key: Hashable) -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last[key] = now
        if len(self._last) > 10_000:
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
        return True
