"""``/metrics`` off the public port (``--metrics-listen [HOST:]PORT``), for operators who would
rather keep it off the address users reach than hand out a token (issue 19).

A minimal HTTP/1.1 listener in the server's own event loop: it answers ``GET /metrics`` with the
same registry as the public route (no token needed: whoever can reach this address may scrape,
so it binds 127.0.0.1 unless told otherwise), 404 for other paths, 405 for other methods, and
closes every connection after one answer. It runs in the serving loop, not in a thread as
``prometheus_client.start_http_server`` would, because the collector reads the hubs' live
dictionaries, which only the loop's own thread may iterate safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .metrics import Metrics

__all__ = ["MetricsListener", "parse_listen"]

log = logging.getLogger(__name__)

_MAX_HEAD = 8192  # a scrape's request head is a few hundred bytes
_READ_TIMEOUT = 5.0


def parse_listen(value: str) -> tuple[str, int]:
    """``"9108"`` or ``"127.0.0.1:9108"`` or ``"[::1]:9108"`` -> (host, port); ``ValueError`` says why."""
    host, sep, port = value.strip().rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value.strip()
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics-listen wants [HOST:]PORT with a port from 1 to 65535, not {value!r}")
    return host, int(port)


class MetricsListener:
    """Serve ``metrics`` at ``http://host:port/metrics`` while started."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host, self.port = host, port
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=_MAX_HEAD)
        log.info("metrics at http://%s:%d/metrics", self.host if ":" not in self.host else f"[{self.host}]", self.port)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            status, body, ctype = await self._answer(reader)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the scraper went away or never finished its request: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                self._handlers.discard(task)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, bytes, str]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
        except asyncio.LimitOverrunError:
            return "431 Request Header Fields Too Large", b"request head too large\n", "text/plain"
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if path != "/metrics":
            return "404 Not Found", b"only /metrics is served here\n", "text/plain"
        if method != "GET":
            return "405 Method Not Allowed", b"only GET /metrics\n", "text/plain"
        return "200 OK", self.metrics.render(), CONTENT_TYPE_LATEST
