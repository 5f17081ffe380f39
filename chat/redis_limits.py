"""The rate limits and the typing throttle in Redis, so they hold across instances.

The bucket is a Lua script on Redis's own clock (``TIME``): instances whose clocks disagree
still agree on the bucket. Keys: ``P rate:<rule>:<user id or client address>`` (expires once
full again) and
``P typing:<room>:<user>`` (``SET NX PX``: the first signal in each interval wins).
"""

from __future__ import annotations

import math

from .ratelimit import Limits, Rate
from .redis_conn import RedisConn

__all__ = ["RedisLimits"]

# KEYS: the bucket. ARGV: rate (tokens a second), burst. -> seconds to wait ("0" if allowed)
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(v[1]) or burst
local at = tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 't', string.format('%.6f', tokens), 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return string.format('%.6f', wait)
"""


class RedisLimits(Limits):
    def __init__(self, conn: RedisConn, typing_interval: float) -> None:
        self.conn = conn
        self.typing_ms = max(1, math.ceil(typing_interval * 1000))
        self._bucket = conn.script(_BUCKET)

    async def take(self, rate: Rate, key: str) -> float:
        wait = await self._bucket(keys=[self.conn.key("rate", rate.name, key)], args=[rate.rate, rate.burst])
        return float(wait)

    async def typing(self, room: str, user_id: str) -> bool:
        key = self.conn.key("typing", room, user_id)
        return bool(await self.conn.text.set(key, "1", nx=True, px=self.typing_ms))
