"""Litestar glue: turn a hub subscription into an SSE response.

Litestar's ``ServerSentEvent`` re-encodes every item it is given; the hub already hands out
pre-encoded, pre-joined bytes, so we stream them through a ``Stream`` response. Ours
(:class:`SSEStream`) also counts itself against the hub's per-client limit and lets the hub's
write watchdog end it when the client stops reading (see ``shared.limits``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from litestar import Request
from litestar.exceptions import ServiceUnavailableException
from litestar.response import Stream
from litestar.response.base import ASGIResponse

from .backends.base import BackendUnavailable
from .encoding import encode
from .fastpath import direct_for
from .hub import Hub, Subscription
from .limits import ABORT_CONNECTION, TooManyStreams

if TYPE_CHECKING:
    from litestar.background_tasks import BackgroundTask, BackgroundTasks
    from litestar.datastructures import Cookie
    from litestar.types import Receive, Scope, Send

__all__ = ["SSE_HEADERS", "SSEStream", "last_event_id", "sse_response"]

log = logging.getLogger(__name__)

_NOT_FOR_ERRORS = {b"content-type", b"content-length", b"transfer-encoding", b"x-accel-buffering"}

SSE_HEADERS = {
    "Cache-Control": "no-store",
    # nginx buffers proxied responses unless told not to, which would hold events back.
    "X-Accel-Buffering": "no",
}
SSE_MEDIA_TYPE = "text/event-stream; charset=utf-8"


def last_event_id(request: Request) -> str | None:  # type: ignore[type-arg]
    """The id to resume after: the ``Last-Event-ID`` header (set by a reconnecting EventSource)
    wins over the ``last_event_id`` query parameter (used by a page's first connect)."""
    value = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    return value.strip() or None if value else None


def sse_response(
    hub: Hub,
    topic: str,
    *,
    last_id: str | None = None,
    prelude: Callable[[], Awaitable[bytes]] | bytes | None = None,
    retry_ms: int = 3000,
    on_close: Callable[[], Awaitable[None]] | None = None,
    on_open: Callable[[Subscription], None] | None = None,
    farewell: Callable[[Subscription], bytes | None] | None = None,
    until: str | None = None,
) -> SSEStream:
    """A streaming response of ``topic`` from ``last_id`` on.

    ``prelude`` (bytes, or a coroutine function giving bytes) is sent first, after the ``retry``
    hint: a ``snapshot`` or ``session`` event. ``on_open`` gets the subscription (to end it
    later with ``sub.close()``); ``farewell`` may give a last event when it was ended that way.
    ``on_close`` runs when the stream ends for any reason, the client vanishing included.
    ``until`` names the topic's final event: the response ends after it (see ``Hub.subscribe``).
    """
    if not hub.accepting:
        # Refuse before any header is sent, so the client retries (and lands on the new server).
        raise ServiceUnavailableException("server is shutting down; reconnect shortly", headers={"Retry-After": "1"})
    subs: list[Subscription] = []

    def opened(sub: Subscription) -> None:
        subs.append(sub)
        if on_open is not None:
            on_open(sub)

    return SSEStream(hub, _HubBody(hub, topic, last_id, prelude, retry_ms, on_close, opened, farewell, until), subs)


class SSEStream(Stream):
    """The response of :func:`sse_response`: a ``Stream`` of pre-encoded event bytes that counts
    against ``hub.limiter`` (429 past the limit) and is timed by ``hub.watchdog``.

    ``body`` is any async iterable of ``bytes`` (each item written as it comes).
    """

    __slots__ = ("hub", "subscriptions")

    def __init__(self, hub: Hub, body: AsyncIterable[bytes], subscriptions: list[Subscription] | None = None) -> None:
        super().__init__(body, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
        self.hub = hub
        self.subscriptions = subscriptions if subscriptions is not None else []  # filled as the body opens

    def to_asgi_response(
        self,
        app: Any,
        request: Request[Any, Any, Any],
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        status_code: int | None = None,
        **_: Any,
    ) -> ASGIResponse:
        # As Stream.to_asgi_response does, but building our ASGI response.
        merged = {**headers, **self.headers} if headers is not None else self.headers
        all_cookies = self.cookies if cookies is None else itertools.chain(self.cookies, cookies)
        return _SSEASGIResponse(
            self.hub,
            self.subscriptions,
            self.iterator,  # type: ignore[arg-type]
            background=self.background or background,
            content_length=0,
            cookies=all_cookies,
            encoded_headers=encoded_headers,
            encoding=self.encoding,
            headers=merged,
            is_head_response=is_head_response,
            media_type="text/event-stream",  # Litestar appends "; charset=utf-8"
            status_code=self.status_code or status_code,
        )


class _SSEASGIResponse(ASGIResponse):
    """Writes the body from the request's own task, one ``send`` per chunk.

    Litestar's streaming response runs an anyio task group per response (a task for the body, one
    listening for the disconnect, a cancel scope): measurable CPU per connect, memory per idle
    stream and time per event. Here the body runs in the task the server gave the request, and
    one small task waits for ``http.disconnect`` and cancels it, as the task group would.
    """

    __slots__ = ("_body", "_hub", "_hung_up", "_scope", "_send", "_streaming", "_subs", "_task", "writing_since")

    _should_set_content_length = False

    def __init__(self, hub: Hub, subs: list[Subscription], body: AsyncIterable[bytes], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hub = hub
        self._subs = subs
        self._body = body
        self._scope: Scope | None = None
        self._send: Send | None = None
        self._task: asyncio.Task[Any] | None = None
        self._streaming = False
        self._hung_up = False  # the client went away, or the watchdog gave up on it
        self.writing_since: float | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            client = self._hub.limiter.acquire(scope)
        except TooManyStreams as exc:
            await self._close_body()  # never started: nothing to clean up but the object
            await self._refuse(send, exc)
            return
        self._scope = scope
        self._send = send
        task = self._task = asyncio.current_task()
        watchdog = self._hub.watchdog
        watchdog.add(self)
        watcher: asyncio.Task[None] | None = None
        self._streaming = True
        try:
            await self.start_response(send)
            if task is not None and not self.is_head_response:
                watcher = asyncio.create_task(self._watch(receive, task))
            body = self._body
            if self.is_head_response:
                pass
            elif isinstance(body, _HubBody):
                await body.run(self)
            else:
                async for chunk in body:
                    await self.write(chunk)
                    if self._hung_up:
                        break  # a body that caught the cancellation: stop anyway
            self._streaming = False
            if not self._hung_up:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not self._hung_up or task is None:
                raise
            task.uncancel()  # our own cancellation (see _watch): the stream just ends
        finally:
            self._streaming = False
            if watcher is not None:
                watcher.cancel()
            watchdog.discard(self)
            self._hub.limiter.release(client)
            # A body cut off while it waited to write (the client vanished, or the watchdog
            # gave up) is still suspended at its ``yield``: close it now, so its subscription and
            # on_close run here rather than whenever it is garbage-collected.
            await self._close_body()
        await self.after_response()

    async def _watch(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._hang_up(task)

    def _hang_up(self, task: asyncio.Task[Any] | None) -> None:
        if self._streaming and not self._hung_up:
            self._hung_up = True
            if task is not None:
                task.cancel()

    async def write(self, chunk: bytes) -> None:
        """Send ``chunk``; the watchdog sees how long it waits (on a full socket: forever)."""
        self.writing_since = time.monotonic()
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})  # type: ignore[misc]
        self.writing_since = None

    def write_stuck(self, seconds: float) -> None:
        """The client stopped reading: drop its connection, which ends the stream everywhere."""
        scope: Scope | dict[str, Any] = self._scope or {}
        client = scope.get("client")
        log.info("dropping a stream to %s: one write waited %.1fs (the client stopped reading)", client, seconds)
        for sub in self._subs:
            # So that when the send returns the body ends, instead of joining everything it missed.
            sub.close("slow")
        abort = (scope.get("state") or {}).get(ABORT_CONNECTION)
        if abort is not None and abort(scope):
            return  # the server sees a lost connection: the send returns, the watcher cancels the body
        # Another server: cancel the write; the stream ends, though the server may keep the
        # socket until the client goes.
        self._hang_up(self._task)

    async def _refuse(self, send: Send, exc: TooManyStreams) -> None:
        # Litestar's error shape, sent here rather than raised: raised, it would be labelled with
        # the route's media type (text/event-stream) instead of JSON.
        body = json.dumps(
            {
                "status_code": 429,
                "detail": str(exc),
                "extra": {"limit": exc.limit, "limit_name": "max_streams_per_client"},
            }
        ).encode()
        headers = [(k, v) for k, v in self.encode_headers() if k.lower() not in _NOT_FOR_ERRORS]
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(exc.retry_after).encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _close_body(self) -> None:
        aclose = getattr(self._body, "aclose", None)
        if aclose is not None:
            await aclose()


class _HubBody:
    """The body of :func:`sse_response`: a hub subscription written straight to the response.

    No async generator per chunk: one event wakes every subscriber of the topic, so each step
    saved here is saved a thousand times per event with a thousand subscribers.
    """

    __slots__ = ("farewell", "hub", "last_id", "on_close", "on_open", "prelude", "retry_ms", "topic", "until")

    def __init__(
        self,
        hub: Hub,
        topic: str,
        last_id: str | None,
        prelude: Callable[[], Awaitable[bytes]] | bytes | None,
        retry_ms: int,
        on_close: Callable[[], Awaitable[None]] | None,
        on_open: Callable[[Subscription], None],
        farewell: Callable[[Subscription], bytes | None] | None,
        until: str | None = None,
    ) -> None:
        self.hub = hub
        self.topic = topic
        self.last_id = last_id
        self.prelude = prelude
        self.retry_ms = retry_ms
        self.on_close = on_close
        self.on_open = on_open
        self.farewell = farewell
        self.until = until

    def __aiter__(self) -> AsyncIterator[bytes]:
        raise TypeError("the body of sse_response() is written by its response, not iterated")

    async def run(self, out: _SSEASGIResponse) -> None:
        hub = self.hub
        try:
            async with hub.subscribe(self.topic, self.last_id, until=self.until) as sub:
                self.on_open(sub)
                first = encode(retry=self.retry_ms)
                prelude = self.prelude
                if prelude is not None:
                    first += prelude if isinstance(prelude, bytes) else await prelude()
                # Writing at once sends the headers, so the browser's EventSource opens now.
                await out.write(first)
                send = out._send
                assert send is not None
                # uvicorn's own send, chunked: idle, the stream parks for direct writes (issue 20).
                direct = direct_for(send, out._scope)
                while True:
                    chunk = sub.take()
                    if chunk:
                        # out.write() inlined: this line runs once per subscriber per event.
                        out.writing_since = time.monotonic()
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        out.writing_since = None
                    elif chunk is None:
                        break
                    elif direct is not None and direct.usable():
                        await sub.park(direct)
                    else:
                        await sub.wait()
                if sub.ended_reason == "shutdown":
                    await out.write(hub.shutdown_event(sub.last_id))
                elif self.farewell is not None and (last := self.farewell(sub)):
                    await out.write(last)
        except BackendUnavailable:
            # The headers are sent already, so no 503 now: tell the client to come back in a second.
            await out.write(encode(retry=1000, comment="event store unavailable; reconnect shortly"))
        finally:
            if self.on_close is not None:
                await self.on_close()
