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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from litestar import Request
from litestar.exceptions import ServiceUnavailableException
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse

from .backends.base import BackendUnavailable
from .encoding import encode
from .hub import Hub, Subscription
from .limits import ABORT_CONNECTION, TooManyStreams

if TYPE_CHECKING:
    from litestar.background_tasks import BackgroundTask, BackgroundTasks
    from litestar.datastructures import Cookie
    from litestar.types import Message, Receive, Scope, Send

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
) -> SSEStream:
    """A streaming response of ``topic`` from ``last_id`` on.

    ``prelude`` (bytes, or a coroutine function giving bytes) is sent first, after the ``retry``
    hint: a ``snapshot`` or ``session`` event. ``on_open`` gets the subscription (to end it
    later with ``sub.close()``); ``farewell`` may give a last event when it was ended that way.
    ``on_close`` runs when the stream ends for any reason, the client vanishing included.
    """
    if hub.closing:
        # Refuse before any header is sent, so the client retries (and lands on the new server).
        raise ServiceUnavailableException("server is shutting down; reconnect shortly", headers={"Retry-After": "1"})
    subs: list[Subscription] = []

    def opened(sub: Subscription) -> None:
        subs.append(sub)
        if on_open is not None:
            on_open(sub)

    return SSEStream(hub, _body(hub, topic, last_id, prelude, retry_ms, on_close, opened, farewell), subs)


class SSEStream(Stream):
    """The response of :func:`sse_response`: a ``Stream`` of pre-encoded event bytes that counts
    against ``hub.limiter`` (429 past the limit) and is timed by ``hub.watchdog``."""

    __slots__ = ("hub", "subscriptions")

    def __init__(self, hub: Hub, body: AsyncIterator[bytes], subscriptions: list[Subscription] | None = None) -> None:
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
            background=self.background or background,
            content_length=0,
            cookies=all_cookies,
            encoded_headers=encoded_headers,
            encoding=self.encoding,
            headers=merged,
            is_head_response=is_head_response,
            iterator=self.iterator,
            media_type="text/event-stream",  # Litestar appends "; charset=utf-8"
            status_code=self.status_code or status_code,
        )


class _SSEASGIResponse(ASGIStreamingResponse):
    __slots__ = ("_hub", "_scope", "_subs", "_task", "writing_since")

    def __init__(self, hub: Hub, subs: list[Subscription], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hub = hub
        self._subs = subs
        self._scope: Scope | None = None
        self._task: asyncio.Task[Any] | None = None
        self.writing_since: float | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            client = self._hub.limiter.acquire(scope)
        except TooManyStreams as exc:
            await self._close_iterator()  # never started: nothing to clean up but the object
            await self._refuse(send, exc)
            return
        self._scope = scope
        watchdog = self._hub.watchdog
        watchdog.add(self)
        try:
            await super().__call__(scope, receive, self._timed(send))
        finally:
            watchdog.discard(self)
            self._hub.limiter.release(client)
            # A body cut off while it waited to write (the client vanished, or the watchdog
            # cancelled the write) is still suspended at its ``yield``: close it now, so its
            # subscription and on_close run here rather than whenever it is garbage-collected.
            await self._close_iterator()

    def _timed(self, send: Send) -> Send:
        async def timed_send(message: Message) -> None:
            # The watchdog sees how long this write has waited (on a full socket: forever).
            self.writing_since = time.monotonic()
            self._task = asyncio.current_task()
            await send(message)
            self.writing_since = None

        return timed_send

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
            return  # the server sees a lost connection: the send returns, the body is cancelled
        # Another server: cancel the write; the stream ends, though the server may log that the
        # response was not completed and keep the socket until the client goes.
        if self._task is not None:
            self._task.cancel()

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

    async def _close_iterator(self) -> None:
        aclose = getattr(self.iterator, "aclose", None)
        if aclose is not None:
            await aclose()


async def _body(
    hub: Hub,
    topic: str,
    last_id: str | None,
    prelude: Callable[[], Awaitable[bytes]] | bytes | None,
    retry_ms: int,
    on_close: Callable[[], Awaitable[None]] | None,
    on_open: Callable[[Subscription], None] | None = None,
    farewell: Callable[[Subscription], bytes | None] | None = None,
) -> AsyncIterator[bytes]:
    try:
        async with hub.subscribe(topic, last_id) as sub:
            if on_open is not None:
                on_open(sub)
            first = encode(retry=retry_ms)
            if prelude is not None:
                first += prelude if isinstance(prelude, bytes) else await prelude()
            # Writing at once sends the headers, so the browser's EventSource opens now.
            yield first
            async for chunk in sub:
                yield chunk
            if sub.ended_reason == "shutdown":
                yield hub.shutdown_event(sub.last_id)
            elif farewell is not None and (last := farewell(sub)):
                yield last
    except BackendUnavailable:
        # The headers are sent already, so no 503 now: tell the client to come back in a second.
        yield encode(retry=1000, comment="event store unavailable; reconnect shortly")
    finally:
        if on_close is not None:
            await on_close()
