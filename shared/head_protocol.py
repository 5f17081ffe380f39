"""uvicorn's HTTP/1.1 protocol with two changes: a response's head leaves with its body in one
write, and the request head is bounded in size and in time (:class:`HeadWithBodyProtocol`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _BaseHttpProtocol

    _HTTPTOOLS = True
except ImportError:  # pragma: no cover - without httptools, uvicorn uses h11
    from uvicorn.protocols.http.h11_impl import H11Protocol as _BaseHttpProtocol  # type: ignore[assignment]

    _HTTPTOOLS = False  # h11 bounds the head itself (h11_max_incomplete_event_size), not its time

__all__ = ["HEAD_TIMEOUT", "MAX_HEAD_BYTES", "HeadWithBodyProtocol"]


class _HeadWithBody:
    """A transport that holds a response's head back until the first write of its body.

    uvicorn writes the status line and headers, then each body part, each in its own
    ``transport.write``, and uvloop sends each at once: two system calls (and two wake-ups of
    the client) for every small response. Held back, the head leaves with the body in one
    write, or at the end of this turn of the event loop if no body comes by then.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(b"HTTP/1.1 "):  # uvicorn writes a whole head at once
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def writelines(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))  # through write(): never past a held head

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():  # (the connection was lost meanwhile)
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def direct_transport(self) -> asyncio.Transport | None:
        """The wrapped transport, for direct writes of a response's body (``shared.fastpath``),
        once no head is held back."""
        return self._transport if self._held is None else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# A request head (request line and headers) must fit in this many bytes (one more: 431), and
# arrive within this many seconds of the connection opening or of the previous response ending
# (else the connection is closed). uvicorn with httptools bounds neither: twenty unfinished 8 MiB
# heads took a server from 72 to 255 MiB, and slowloris connections stayed open for good.
MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT = 10.0


class HeadWithBodyProtocol(_BaseHttpProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools when installed, as ``http="auto"`` picks), writing
    each response's head together with its body (see :class:`_HeadWithBody`), with the request
    head bounded in size (:data:`MAX_HEAD_BYTES`) and in time (:data:`HEAD_TIMEOUT`)."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout = HEAD_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadWithBody(transport, self.loop))  # type: ignore[arg-type]
        self._head_bytes: int | None = None  # None: not inside a request head
        self._head_timer: asyncio.TimerHandle | None = None
        if _HTTPTOOLS:
            self._await_head()

    def _await_head(self) -> None:
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _head_done(self) -> None:
        self._head_bytes = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._head_bytes is not None and not self.transport.is_closing():
            if self._head_bytes:
                self._refuse(408, f"the request head did not arrive within {self.head_timeout:g} s")
            else:
                self.transport.close()  # an idle connection that never asked anything

    def _refuse(self, status: int, detail: str) -> None:
        body = json.dumps({"status_code": status, "detail": detail}).encode()
        reason = {408: "Request Timeout", 431: "Request Header Fields Too Large"}[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()
        self._head_bytes = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing: bytes of a head that completed in this chunk (and the body
        # after it) do not count; a head still unfinished holds at most the limit plus a chunk.
        if self._head_bytes is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
                self._refuse(431, f"the request head is over {self.max_head_bytes // 1024} KiB")

    def on_headers_complete(self) -> None:
        self._head_done()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(getattr(self, "pipeline", None))
        super().on_response_complete()
        if _HTTPTOOLS and not pipelined and not self.transport.is_closing():
            self._await_head()  # the next request on this keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_done()
        super().connection_lost(exc)
