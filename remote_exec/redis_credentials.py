"""Viewer tokens and login sessions in Redis (see ``credentials.py``), shared by every instance.

- ``exec:token:<id>``: the token's record (JSON, with its hash and ``revoked``), expiring with it;
- ``exec:token-hash:<sha256>``: the id of the usable token with that hash (deleted on revoke);
- ``exec:tokens``: a sorted set of ids by creation time, for the list (pruned as records expire);
- ``exec:session:<sha256 of its id>``: a session (JSON), expiring with it.

A revoked token's sessions are refused by their parent check (``Auth``), on every instance.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from .credentials import Credentials, Session, ViewerToken
from .redis_conn import RedisConn

__all__ = ["RedisCredentials"]


def _ms(at: float) -> int:
    return max(1, int(at * 1000))


class RedisCredentials(Credentials):
    def __init__(self, conn: RedisConn) -> None:
        self.conn = conn

    async def add_token(self, token: ViewerToken) -> None:
        c, key = self.conn, self.conn.key
        pipe = c.redis.pipeline(transaction=True)
        pipe.set(key("token", token.id), json.dumps(asdict(token)), pxat=_ms(token.expires_at))
        pipe.set(key("token-hash", token.token_hash), token.id, pxat=_ms(token.expires_at))
        pipe.zadd(key("tokens"), {token.id: token.created_at})
        await c.io(pipe.execute())

    async def _record(self, token_id: str) -> ViewerToken | None:
        raw = await self.conn.io(self.conn.redis.get(self.conn.key("token", token_id)))
        if raw is None:
            return None
        return ViewerToken(**json.loads(raw))

    async def find_token(self, token_hash: str) -> ViewerToken | None:
        token_id = await self.conn.io(self.conn.redis.get(self.conn.key("token-hash", token_hash)))
        if token_id is None:
            return None
        return await self.get_token(str(token_id))

    async def get_token(self, token_id: str) -> ViewerToken | None:
        token = await self._record(token_id)
        return token if token is not None and token.usable() else None

    async def list_tokens(self, limit: int = 200) -> list[ViewerToken]:
        c, key = self.conn, self.conn.key
        ids = [str(i) for i in await c.io(c.redis.zrevrange(key("tokens"), 0, limit - 1))]
        if not ids:
            return []
        raws = await c.io(c.redis.mget([key("token", i) for i in ids]))
        gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if gone:  # expired records: drop them from the list too
            await c.io(c.redis.zrem(key("tokens"), *gone))
        return [ViewerToken(**json.loads(raw)) for raw in raws if raw is not None]

    async def revoke_token(self, token_id: str) -> bool:
        token = await self.get_token(token_id)
        if token is None:
            return False
        c, key = self.conn, self.conn.key
        record = asdict(token) | {"revoked": True}
        pipe = c.redis.pipeline(transaction=True)
        pipe.set(key("token", token_id), json.dumps(record), keepttl=True, xx=True)
        pipe.delete(key("token-hash", token.token_hash))
        await c.io(pipe.execute())
        return True

    async def add_session(self, session: Session) -> None:
        key = self.conn.key("session", session.sid_hash)
        await self.conn.io(self.conn.redis.set(key, json.dumps(asdict(session)), pxat=_ms(session.expires_at)))

    async def get_session(self, sid_hash: str) -> Session | None:
        raw = await self.conn.io(self.conn.redis.get(self.conn.key("session", sid_hash)))
        if raw is None:
            return None
        session = Session(**json.loads(raw))
        return session if session.expires_at > time.time() else None

    async def delete_session(self, sid_hash: str) -> None:
        await self.conn.io(self.conn.redis.delete(self.conn.key("session", sid_hash)))
