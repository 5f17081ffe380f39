"""The rate limits and the typing throttle in Redis, so they hold across instances.

The bucket is a Lua script on Redis's own clock (``TIME``): instances whose clocks disagree
still agree on the bucket. Keys: ``P rate:<rule>:<user id or client address>`` (expires once
full again) and
``P typing:<room>:<user>`` (``SET NX PX``: the first signal in each interval wins).
"""

from __future__ import annotations

import math

from shared.backends.lua import load_lua

from .ratelimit import Limits, Rate
from .redis_conn import RedisConn

__all__ = ["RedisLimits"]
_BUCKET = load_lua("chat", "lua/limits_bucket.lua")


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
