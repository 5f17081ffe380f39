"""Every instance's runs, in Redis, and whether their owners are alive (issue 13 part 4).

A run's owner keeps its full row in its own SQLite file, which no other instance can read once
the owner is dead. So each owner also writes the row here when the run starts and ends, and any
instance lists runs from here: a dead owner's runs stay listed (as ``unreachable``, then
``lost``) instead of vanishing with it.

- ``exec:runs``: a hash, run id -> the run's public row (JSON);
- ``exec:runs-by-start``: a sorted set of run ids by start time (the newest ``keep`` are kept);
- ``exec:running``: the ids of runs whose last written status is ``running``;
- ``exec:alive:<instance>``: refreshed by each instance every beat, expiring ``lost_after``
  seconds after the last one: once it is gone, the instance has been silent that long;
- ``exec:claim:<what>:<instance>``: who tells the others that ``instance`` is unreachable, or
  that its runs are lost (``SET NX``: one instance does, once).

There is no in-memory variant: with the memory backend there is one instance, and its SQLite
file is the index.
"""

from __future__ import annotations

import json
from typing import Any

from .redis_conn import RedisConn
from .store import RUNNING

__all__ = ["RunIndex"]


class RunIndex:
    def __init__(self, conn: RedisConn, *, keep: int = 5000) -> None:
        self.conn = conn
        self.keep = keep

    async def put(self, row: dict[str, Any]) -> None:
        c, key = self.conn, self.conn.key
        run_id = str(row["id"])
        pipe = c.redis.pipeline(transaction=True)
        pipe.hset(key("runs"), run_id, json.dumps(row, separators=(",", ":")))
        pipe.zadd(key("runs-by-start"), {run_id: float(row["started_at"])})
        if row.get("status") == RUNNING:
            pipe.sadd(key("running"), run_id)
        else:
            pipe.srem(key("running"), run_id)
        pipe.zcard(key("runs-by-start"))
        count = (await c.io(pipe.execute()))[-1]
        if int(count) > self.keep + self.keep // 10:
            await self._trim()

    async def _trim(self) -> None:
        c, key = self.conn, self.conn.key
        old = await c.io(c.redis.zrange(key("runs-by-start"), 0, -self.keep - 1))
        if old:
            pipe = c.redis.pipeline(transaction=True)
            pipe.zrem(key("runs-by-start"), *old)
            pipe.hdel(key("runs"), *old)
            pipe.srem(key("running"), *old)
            await c.io(pipe.execute())

    async def latest(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` runs, newest first."""
        c, key = self.conn, self.conn.key
        ids = await c.io(c.redis.zrevrange(key("runs-by-start"), 0, limit - 1))
        return await self._rows([str(i) for i in ids])

    async def running(self) -> list[dict[str, Any]]:
        """Runs whose owner last said they were running."""
        c, key = self.conn, self.conn.key
        members: set[str] = await c.io(c.redis.smembers(key("running")))  # type: ignore[arg-type]
        return await self._rows(sorted(members))

    async def _rows(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        raws = await self.conn.io(self.conn.redis.hmget(self.conn.key("runs"), ids))
        out = []
        for raw in raws:
            if raw is None:
                continue
            try:
                row = json.loads(raw)
            except ValueError:
                continue
            if isinstance(row, dict):
                out.append(row)
        return out

    # -- liveness ---------------------------------------------------------------------------------

    async def beat(self, instance: str, lost_after: float) -> bool:
        """Refresh ``instance``'s liveness key; ``True`` if another instance has declared its
        runs lost meanwhile (it was silent for longer than ``lost_after``)."""
        c, key = self.conn, self.conn.key
        pipe = c.redis.pipeline(transaction=True)
        pipe.set(key("alive", instance), "1", px=max(1, int(lost_after * 1000)))
        pipe.exists(key("claim", "lost", instance))
        return bool((await c.io(pipe.execute()))[1])

    async def forget_claim(self, what: str, instance: str) -> None:
        await self.conn.io(self.conn.redis.delete(self.conn.key("claim", what, instance)))

    async def leave(self, instance: str) -> None:
        await self.conn.io(self.conn.redis.delete(self.conn.key("alive", instance)))

    async def beating(self, instance: str) -> bool:
        """Whether ``instance`` refreshed its liveness key within its ``lost_after``."""
        return bool(await self.conn.io(self.conn.redis.exists(self.conn.key("alive", instance))))

    async def claim(self, what: str, instance: str, ttl_s: float) -> bool:
        """``True`` for the one instance that gets to act on ``what`` (for ``ttl_s`` seconds)."""
        got = await self.conn.io(
            self.conn.redis.set(self.conn.key("claim", what, instance), "1", nx=True, px=max(1, int(ttl_s * 1000)))
        )
        return bool(got)
