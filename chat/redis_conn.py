"""The chat's own Redis connections (the hub's backend has its own), and the keys it uses.

Short timeouts and no retries, as in ``shared.backends.redis``: while Redis is unreachable a
write fails within about a second and the client gets a 503; a retried script whose first
attempt did land could apply twice (a reaction toggled back), so redis-py never retries.
Clients connect lazily: building one does no I/O.
"""

from __future__ import annotations

from redis import exceptions as rex
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shared.backends import BackendUnavailable
from shared.backends.redis_url import app_options, make_pool

__all__ = ["UNAVAILABLE", "RedisConn"]

# "Redis cannot take this right now": the app answers 503 + Retry-After for these.
UNAVAILABLE: tuple[type[Exception], ...] = (
    rex.ConnectionError,  # BusyLoadingError (Redis reading its AOF after a restart) included
    rex.TimeoutError,
    rex.ReadOnlyError,
    rex.OutOfMemoryError,
    rex.TryAgainError,
    BackendUnavailable,
)


class RedisConn:
    """``text`` answers with ``str`` (state, scripts); ``raw`` with ``bytes`` (uploads)."""

    def __init__(self, url: str, prefix: str, *, max_connections: int = 20) -> None:
        self.url = url
        self.prefix = prefix
        options = app_options(url, "chat", max_connections)
        self.text = Redis(connection_pool=make_pool(url, {**options, "decode_responses": True}))
        # Uploads are up to max_file_bytes: a longer timeout for the one command that moves them.
        raw = {**options, "socket_timeout": 10.0, "max_connections": 4, "client_name": "chat-files"}
        self.raw = Redis(connection_pool=make_pool(url, {**raw, "decode_responses": False}))

    def key(self, *parts: str) -> str:
        """``prefix + "a:b"`` for ``key("a", "b")``."""
        return self.prefix + ":".join(parts)

    def script(self, source: str) -> AsyncScript:
        """A Lua script, sent by hash (and loaded again by redis-py after a Redis restart)."""
        script: AsyncScript = self.text.register_script(source)
        return script

    async def close(self) -> None:
        await self.text.aclose(close_connection_pool=True)
        await self.raw.aclose(close_connection_pool=True)
