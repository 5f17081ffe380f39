"""Direct writes: a topic's shared bytes framed once and written into each subscriber's socket.

The ASGI path costs, per subscriber and per event, a future, a task step through the response's
coroutine and every middleware frame it sits in, a message dict and uvicorn's ``send``; and the
adaptive rounds that kept it affordable held each event back for up to a round's CPU time
(py-spy at 100 events/s to 1,000 subscribers, issue 20: 41% of the samples in ``write()``, most
of the rest that machinery; p50 15-24 ms where Go's net/http had 5-10). Here, a
stream that is idle and live (it wrote everything it took, no history to page, no pushed notice)
parks with its topic instead of waiting on a future; when the log grows the topic walks its
parked streams in one loop, takes each one's bytes (streams at the same cursor share one joined
``bytes`` object, so one chunk framing for HTTP/1.1 per distinct range), and writes them to the
transport. uvloop sends at once, inside ``write()``.

Anything else goes back to the response's coroutine and the ASGI path, which does what it did
before: the transport is behind (uvicorn's flow control paused it: the ASGI ``send`` waits for
the drain, and the write watchdog times that wait, so a reader that stopped reading is ended as
before), the connection is gone, the subscription ended (final event, slow, ``close()``),
something was pushed to it, or the topic closed (shutdown: the coroutine writes the ``shutdown``
event). Only uvicorn's httptools protocol, sending chunked, its ``send`` wrapped by nothing but
Litestar's exception middleware (another wrapper may transform the body: compression...); a mux
topic, h11, other servers and HEAD use the ASGI path throughout.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hub import Subscription, _Topic

_Cycle: Any
try:
    from uvicorn.protocols.http import httptools_impl

    _Cycle = httptools_impl.RequestResponseCycle
except ImportError:  # pragma: no cover - without httptools there is no direct path
    _Cycle = None

__all__ = ["DIRECT_HOLD", "DIRECT_SLICE", "Direct", "direct_for", "flush"]

# Streams written per turn of the event loop, about a millisecond of write() calls here (~7 µs
# each on loopback on the 2-core bench machine): between slices the publisher, the readers of
# requests and new connections get a turn, and what they publish goes out with the later slices.
# One pass of 1,000 streams in one turn let a publisher that had fallen behind add one event per
# pass: at 100 events/s it fell 4 s behind in 5 s (p50 2 s).
DIRECT_SLICE = 128
# After a pass, the next one waits this fraction of its CPU time (see _Topic.direct_done).
DIRECT_HOLD = 0.25


class Direct:
    """One response's direct line to its socket, while it is parked with its topic."""

    __slots__ = ("cycle", "flow", "sub", "transport", "waiter")

    def __init__(self, cycle: Any, transport: asyncio.Transport) -> None:
        self.cycle = cycle
        self.flow = cycle.flow
        self.transport = transport
        self.sub: Subscription | None = None
        self.waiter: asyncio.Future[None] | None = None

    def usable(self) -> bool:
        """Whether a write now would go where the ASGI ``send`` would put it, without waiting."""
        cycle = self.cycle
        return not (cycle.disconnected or cycle.response_complete or self.flow.write_paused)


# Wrappers of ``send`` known to pass every body message through untouched (they look at the
# response's start only), by module and qualified name: Litestar's exception middleware wraps
# every request's ``send`` to note that the response started. Any other wrapper may transform the
# body (compression...), so the stream keeps to the ASGI path.
_PASS_THROUGH = {
    (
        "litestar.middleware._internal.exceptions.middleware",
        "ExceptionHandlerMiddleware.__call__.<locals>.capture_response_started",
    ),
}


def _unwrap(send: Any) -> Any:
    for _ in range(4):
        if getattr(send, "__self__", None) is not None:
            return send.__self__
        code = getattr(send, "__code__", None)
        if code is None or (getattr(send, "__module__", None), send.__qualname__) not in _PASS_THROUGH:
            return None
        cells = dict(zip(code.co_freevars, send.__closure__ or (), strict=True))
        cell = cells.get("send")
        if cell is None:
            return None
        send = cell.cell_contents
    return None


def direct_for(send: Any, scope: Any) -> Direct | None:
    """A :class:`Direct` for a response whose ``send`` is uvicorn's own (httptools), once its
    head has gone; ``None`` where only ASGI will do."""
    if _Cycle is None:
        return None
    cycle: Any = _unwrap(send)
    if type(cycle) is not _Cycle or cycle.scope is not scope:
        return None  # wrapped by a middleware, another server or protocol, a mux topic
    if not cycle.response_started or cycle.chunked_encoding is not True or scope.get("method") == "HEAD":
        return None
    transport = cycle.transport
    # shared.server's protocol holds a response's head back for its first body write (which has
    # been made by now): write to the transport it wraps, one Python call less per event.
    inner = getattr(transport, "direct_transport", None)
    if inner is not None:
        transport = inner()
        if transport is None:
            return None
    return Direct(cycle, transport)


def flush(topic: _Topic, parked: list[Direct], start: int) -> None:
    """Write what is new to ``parked[start:]`` (a slice of them now, the rest in later turns)."""
    stop = min(len(parked), start + DIRECT_SLICE)
    in_topic = topic.direct
    last: bytes | None = None
    framed = b""
    for i in range(start, stop):
        d = parked[i]
        waiter = d.waiter
        if waiter is None or waiter.done():
            continue  # handed back already (close(), push(), a cancelled stream)
        sub = d.sub
        cycle = d.cycle
        if topic.closed or cycle.disconnected or d.flow.write_paused:
            _hand_back(in_topic, d, waiter)
            continue
        chunk = sub.take()  # type: ignore[union-attr]
        if chunk:
            if chunk is not last:
                # uvicorn's chunked framing (RequestResponseCycle.send), once per distinct range.
                last, framed = chunk, b"%x\r\n%b\r\n" % (len(chunk), chunk)
            d.transport.write(framed)
            if sub._closed:  # type: ignore[union-attr]  # its final event: the coroutine ends the response
                _hand_back(in_topic, d, waiter)
        elif chunk is None:
            _hand_back(in_topic, d, waiter)  # ended (slow, closed): take() says so again to the coroutine
    if stop < len(parked):
        topic.loop.call_soon(flush, topic, parked, stop)
    else:
        topic.direct_done()


def _hand_back(parked: dict[Direct, None], d: Direct, waiter: asyncio.Future[None]) -> None:
    parked.pop(d, None)
    waiter.set_result(None)
