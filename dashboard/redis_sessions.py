"""Login sessions in Redis, so every instance on it sees a log-in and a log-out at once.

One hash per session, ``<prefix>dashboard:login:<key>`` (``token_fp``, ``created``, ``address``),
whose TTL is the idle time (cut to what is left of ``max_age``), restarted by each ``get``. A
log-out deletes the key: the next request on any instance finds nothing. Nothing is cached per
instance, so there is no window in which another instance still accepts a logged-out cookie.
While Redis is unreachable control requests fail with 503 (never "logged in" by default).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from litestar.exceptions import ServiceUnavailableException
from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.backends.redis_url import make_pool, url_options

from .sessions import IDLE, MAX_AGE, LoginSession, LoginSessions

__all__ = ["RedisSessions"]

T = TypeVar("T")
_UNAVAILABLE = (rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, rex.OutOfMemoryError, rex.TryAgainError)


class RedisSessions(LoginSessions):
    def __init__(self, url: str, *, prefix: str = "sse:", max_age: float = MAX_AGE, idle: float = IDLE) -> None:
        super().__init__(max_age=max_age, idle=idle)
        self.prefix = f"{prefix}dashboard:login:"
        options: dict[str, Any] = {
            "max_connections": 10,
            "timeout": 1.0,
            "socket_timeout": 2.0,
            "socket_connect_timeout": 0.5,
            "client_name": "dashboard-logins",
            **url_options(url),
            "protocol": 2,
            "decode_responses": True,
            "retry": Retry(NoBackoff(), 0),
        }
        self._redis = Redis(connection_pool=make_pool(url, options))

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)

    async def _io(self, op: Awaitable[T]) -> T:
        try:
            return await op
        except _UNAVAILABLE as exc:
            raise ServiceUnavailableException(
                f"the login sessions' Redis is unreachable ({type(exc).__name__}); retry shortly",
                headers={"Retry-After": "2"},
            ) from None

    def _ttl_ms(self, created: float, now: float) -> int:
        return max(1, int(min(self.idle, created + self.max_age - now) * 1000))

    async def add(self, session: LoginSession) -> None:
        name = self.prefix + session.key
        fields: dict[Any, Any] = {
            "token_fp": session.token_fp,
            "created": repr(session.created),
            "address": session.address,
        }
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(name, mapping=fields)
        pipe.pexpire(name, self._ttl_ms(session.created, time.time()))
        await self._io(pipe.execute())

    async def get(self, key: str) -> LoginSession | None:
        name = self.prefix + key
        data: dict[Any, Any] = await self._io(self._redis.hgetall(name))  # type: ignore[arg-type,misc]
        if not data:
            return None
        now = time.time()
        try:
            found = LoginSession(key, data["token_fp"], float(data["created"]), now, data["address"])
        except (KeyError, ValueError):
            return None
        if now >= found.created + self.max_age:
            await self._io(self._redis.delete(name))
            return None
        # A log-out in between deleted the key: PEXPIRE on a missing key does nothing.
        await self._io(self._redis.pexpire(name, self._ttl_ms(found.created, now)))
        return found

    async def revoke(self, key: str) -> bool:
        return bool(await self._io(self._redis.delete(self.prefix + key)))
