"""Revoked sessions in Redis (``P revoked:<sid>``, with a TTL), so they hold on every instance."""

from __future__ import annotations

from .redis_conn import RedisConn
from .revocations import Revocations

__all__ = ["RedisRevocations"]


class RedisRevocations(Revocations):
    def __init__(self, conn: RedisConn) -> None:
        self.conn = conn

    async def revoke(self, sid: str, ttl: float) -> None:
        await self.conn.text.set(self.conn.key("revoked", sid), "1", px=max(1, int(ttl * 1000)))

    async def is_revoked(self, sid: str) -> bool:
        return bool(await self.conn.text.exists(self.conn.key("revoked", sid)))
