"""One mux connection: the ``GET /sse/mux`` response, its topics, and the frames between them.

The topics' sub-requests put frames in an outbox; the response's own task writes whatever has
gathered in one ``send``. The outbox is bounded: a client that stops reading stops its topics'
writes too, so their own write watchdogs (and the mux's) end them as they would a plain stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ..encoding import encode_comment
from ..limits import ABORT_CONNECTION
from .protocol import Change, hello_frame, shutdown_frame, state_frame
from .relay import BlockCache
from .topic import Topic, sub_scope

__all__ = ["MuxConn", "TooManyTopics"]

log = logging.getLogger(__name__)

_PING = encode_comment("ping")
# Frames waiting to be written, in bytes, before the topics' writes wait for the client.
OUTBOX_BYTES = 1024 * 1024

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
    (b"x-content-type-options", b"nosniff"),
]


class TooManyTopics(Exception):
    """A change would take a connection (or a client) past its topic cap (429)."""

    def __init__(self, detail: str, limit: int, limit_name: str) -> None:
        super().__init__(detail)
        self.limit = limit
        self.limit_name = limit_name


class MuxConn:
    """The topics of one ``GET /sse/mux`` and the writer of its response."""

    __slots__ = (
        "_frames",
        "_room",
        "_size",
        "_task",
        "_wake",
        "app",
        "cache",
        "closing",
        "ended",
        "hung_up",
        "id",
        "lock",
        "max_topics",
        "scope",
        "token",
        "topics",
        "writing_since",
    )

    def __init__(
        self,
        app: Any,
        scope: dict[str, Any],
        conn_id: str,
        token: str,
        max_topics: int,
        cache: BlockCache | None = None,
    ) -> None:
        self.app = app
        self.cache = cache or BlockCache()
        self.scope = scope
        self.id = conn_id
        self.token = token
        self.max_topics = max_topics
        self.topics: dict[str, Topic] = {}
        self.lock = asyncio.Lock()  # held by each change (shared.mux.app)
        self.closing = False  # the server is shutting down: end with `shutdown`
        self.ended = False  # the response is over: no more frames, no more changes
        self.hung_up = False
        self.writing_since: float | None = None
        self._frames: list[tuple[Topic | None, bytes]] = []
        self._size = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[Any] | None = None

    # -- the topics' side -------------------------------------------------------------------

    async def emit(self, topic: Topic | None, frame: bytes) -> None:
        """Queue ``frame`` of ``topic``; waits while the outbox is full (the client is slow)."""
        while self._size >= OUTBOX_BYTES and not self.ended:
            self._room.clear()
            await self._room.wait()
        if self.ended or self.closing or (topic is not None and not topic.current):
            return
        self._frames.append((topic, frame))
        self._size += len(frame)
        self._wake.set()

    def would_have(self, change: Change) -> int:
        """How many topics the connection holds once ``change`` is applied."""
        keys = set(self.topics) - set(change.unsubscribe)
        keys |= {s.k for s in change.subscribe}
        return len(keys)

    async def apply(
        self, change: Change, refusals: dict[str, str] | None = None, cookie: bytes | None = None
    ) -> dict[str, list[str]]:
        """Unsubscribe, then subscribe (a key given again replaces its topic: the old sub-request
        ends first). The caller has checked the caps; a key in ``refusals`` gets its ``t`` error
        (400, the reason) at once and never runs."""
        gone = [self.topics.pop(k) for k in change.unsubscribe if k in self.topics]
        replaced = [self.topics.pop(s.k) for s in change.subscribe if s.k in self.topics]
        for topic in [*gone, *replaced]:
            topic.current = False
        # Shielded: a POST whose client went away must still see its old topics ended.
        await asyncio.shield(asyncio.gather(*(t.stop() for t in [*gone, *replaced])))
        for sub in change.subscribe:
            if self.ended:
                break
            topic = Topic(sub, self.cache)
            why = (refusals or {}).get(sub.k)
            if why is not None:
                topic.state = "error"
                await self.emit(topic, state_frame(sub.k, "error", 400, {"status_code": 400, "detail": why}))
                continue
            self.topics[sub.k] = topic
            topic.start(self.app, sub_scope(self.scope, sub, self.id, cookie), self.emit, self._stopping)
        return {"subscribed": [s.k for s in change.subscribe], "unsubscribed": list(change.unsubscribe)}

    @property
    def task(self) -> asyncio.Task[Any] | None:
        """The task writing the response (once it started)."""
        return self._task

    def _stopping(self) -> bool:
        return self.closing or self.ended

    def forget(self, topic: Topic) -> None:
        """A topic that ended by itself (refused, or closed) leaves the table (and the cap)."""
        if self.topics.get(topic.key) is topic:
            del self.topics[topic.key]

    # -- the response's side ----------------------------------------------------------------

    def shutdown(self) -> None:
        """The server is stopping: end the stream with `shutdown` (topics get no `closed`)."""
        self.closing = True
        self._wake.set()

    async def serve(self, receive: Any, send: Any, *, heartbeat: float, retry_ms: int, shutdown_retry_ms: int) -> None:
        """Write the response until the client goes or the server stops; then end every topic."""
        task = self._task = asyncio.current_task()
        watcher: asyncio.Task[None] | None = None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await self._write(send, hello_frame(self.id, self.token, self.max_topics, retry_ms))
            watcher = asyncio.create_task(self._watch(receive))
            while not self.closing:
                if not self._frames:
                    try:
                        async with asyncio.timeout(heartbeat):
                            await self._wake.wait()
                    except TimeoutError:
                        await self._write(send, _PING)
                        continue
                self._wake.clear()
                if self.closing:
                    break
                frames, self._frames, self._size = self._frames, [], 0
                self._room.set()
                self._reap(frames)
                data = b"".join(f for t, f in frames if t is None or t.current)
                if data:
                    await self._write(send, data)
            if not self.hung_up:
                await self._write(send, shutdown_frame(shutdown_retry_ms))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not self.hung_up or task is None:
                raise
            task.uncancel()  # our own (the client went away): the stream just ends
        finally:
            self.ended = True
            self._room.set()
            if watcher is not None:
                watcher.cancel()
            await self.close_topics()

    def _reap(self, frames: list[tuple[Topic | None, bytes]]) -> None:
        for topic, _ in frames:
            if topic is not None and topic.state in ("error", "closed"):
                self.forget(topic)

    async def close_topics(self) -> None:
        topics, self.topics = list(self.topics.values()), {}
        # Shielded: this runs while the response task is being cancelled (client gone, or the
        # server's graceful timeout), and every sub-request must still be told and awaited.
        await asyncio.shield(asyncio.gather(*(t.stop() for t in topics)))

    async def _write(self, send: Any, data: bytes) -> None:
        self.writing_since = time.monotonic()
        await send({"type": "http.response.body", "body": data, "more_body": True})
        self.writing_since = None

    async def _watch(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.hang_up()

    def hang_up(self) -> None:
        if not self.hung_up and not self.ended:
            self.hung_up = True
            if self._task is not None:
                self._task.cancel()

    def write_stuck(self, seconds: float) -> None:
        """The mux's write watchdog: the client stopped reading; drop its connection."""
        log.info("dropping a mux stream to %s: one write waited %.1fs", self.scope.get("client"), seconds)
        abort: Callable[[Any], bool] | None = (self.scope.get("state") or {}).get(ABORT_CONNECTION)
        with contextlib.suppress(Exception):
            if abort is not None and abort(self.scope):
                return
        self.hang_up()
