"""Litestar glue: turn a hub subscription into an SSE response.

Litestar's ``ServerSentEvent`` re-encodes every item it is given; the hub already hands out
pre-encoded, pre-joined bytes, so we stream them through a plain ``Stream`` response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from litestar import Request
from litestar.exceptions import ServiceUnavailableException
from litestar.response import Stream

from .backends.base import BackendUnavailable
from .encoding import encode
from .hub import Hub, Subscription

__all__ = ["SSE_HEADERS", "last_event_id", "sse_response"]

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
) -> Stream:
    """A streaming response of ``topic`` from ``last_id`` on.

    ``prelude`` (bytes, or a coroutine function giving bytes) is sent first, after the ``retry``
    hint: a ``snapshot`` or ``session`` event. ``on_open`` gets the subscription (to end it
    later with ``sub.close()``); ``farewell`` may give a last event when it was ended that way.
    ``on_close`` runs when the stream ends for any reason, the client vanishing included.
    """
    if hub.closing:
        # Refuse before any header is sent, so the client retries (and lands on the new server).
        raise ServiceUnavailableException("server is shutting down; reconnect shortly", headers={"Retry-After": "1"})
    return Stream(
        _body(hub, topic, last_id, prelude, retry_ms, on_close, on_open, farewell),
        media_type=SSE_MEDIA_TYPE,
        headers=SSE_HEADERS,
    )


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
