"""The exec app's own Redis connection (the hub's backend has its own) for what is not a topic:
viewer tokens, sessions, the run index, liveness.

Short timeouts and no retries, as in ``shared.backends.redis``: while Redis is unreachable a call
fails within about a second with ``BackendUnavailable`` and the client gets a 503.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from redis import exceptions as rex
from redis.asyncio import Redis

from shared.backends import BackendUnavailable
from shared.backends.redis_url import app_options, make_pool, where

__all__ = ["RedisConn"]

T = TypeVar("T")

_UNAVAILABLE: tuple[type[Exception], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.ReadOnlyError,
    rex.OutOfMemoryError,
    rex.TryAgainError,
)


class RedisConn:
    """``redis`` answers with ``str``; ``key("a", "b")`` is ``<prefix>exec:a:b``."""

    def __init__(self, url: str, prefix: str = "sse:", *, max_connections: int = 20) -> None:
        self.url = url
        self.prefix = f"{prefix}exec:"
        options = app_options(url, "exec", max_connections)
        self.redis = Redis(connection_pool=make_pool(url, {**options, "decode_responses": True}))

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def io(self, call: Awaitable[T]) -> T:
        """Await a redis-py call; Redis being away is ``BackendUnavailable`` (a 503 upstream)."""
        try:
            return await call
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"Redis at {where(self.url)} is unavailable ({exc})") from exc

    async def close(self) -> None:
        await self.redis.aclose(close_connection_pool=True)
