"""Python clients for SSE servers: listen with reconnect and resume; answer server requests.

- :class:`EventStream` (async) and :class:`SyncEventStream` (blocking) listen to any SSE URL,
  reconnecting with backoff and ``Last-Event-ID``.
- :class:`Responder` answers the JSON-RPC requests a server sends down a stream (``/bidi/``).
"""

from __future__ import annotations

from .backoff import Backoff
from .responder import Handler, Responder, RpcError
from .stream import Event, EventStream, Status, StreamError, SyncEventStream

__all__ = [
    "Backoff",
    "Event",
    "EventStream",
    "Handler",
    "Responder",
    "RpcError",
    "Status",
    "StreamError",
    "SyncEventStream",
]
