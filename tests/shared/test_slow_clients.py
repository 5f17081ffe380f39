"""Clients that stop reading: a healthy client keeps its latency, and the stalled ones are ended.

A reader that stops reading never falls behind in the hub's log: its stream waits in uvicorn's
flow control for socket buffers that never drain. The hub's write watchdog
(``HubSettings.write_timeout``) ends such streams and resets their connections.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bench.wire import ChunkedEvents
from shared import Hub, HubSettings, MemoryBackend
from showcase import basics
from tests.rig import LiveServer

PAD = "x" * 4096  # 4 KiB events: a stalled reader's buffers fill within a second at 50/s
RATE = 50.0
STALLED = 1000
WRITE_TIMEOUT = 6.0
BASELINE = 6.0  # seconds of events without stalled readers
_EVENT = re.compile(r'"n":(\d+),"t":([0-9.]+)')


def server_loop(srv: LiveServer) -> asyncio.AbstractEventLoop:
    assert srv.server is not None
    assert srv.server.loop is not None
    return srv.server.loop


async def on_server(srv: LiveServer, fn: Callable[[], Any]) -> Any:
    """``fn()`` called in the server's loop (the hub is not thread-safe), without blocking ours
    (the healthy client reads in it)."""

    async def call() -> Any:
        return fn()

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), server_loop(srv)))


async def publish(hub: Hub, seconds: float, stop: list[bool]) -> int:
    """4 KiB ticks at RATE per second, each carrying its publish time."""
    began = time.monotonic()
    n = 0
    while time.monotonic() - began < seconds and not stop:
        n += 1
        await hub.publish_json(basics.TOPIC, {"n": n, "t": time.time(), "pad": PAD}, event="tick")
        await asyncio.sleep(max(0.0, began + n / RATE - time.monotonic()))
    return n


class Healthy:
    """A client that reads everything; records (received at, latency, n) per event."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, int]] = []
        self.task: asyncio.Task[None] | None = None

    async def open(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /basics/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")  # the HTTP head; the body is read as events
        self.writer = writer
        self.task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        events = ChunkedEvents()
        while data := await reader.read(1 << 16):
            now = time.time()
            for ev in events.feed(data):
                m = _EVENT.search(ev.data)
                if m is not None:
                    self.samples.append((now, now - float(m[2]), int(m[1])))

    def p99(self, since: float, until: float) -> tuple[float, int]:
        lat = sorted(lat for at, lat, _ in self.samples if since <= at < until)
        return (lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")), len(lat)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.writer.close()


class Drops(logging.Handler):
    """When each stream was dropped for a stuck write (from the log of shared.responses)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: list[float] = []
        self.logger = logging.getLogger("shared.responses")

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("dropping a stream"):
            self.at.append(record.created)

    def attach(self) -> None:  # after the app is made: Litestar's logging setup resets handlers
        self.level_was = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)

    def detach(self) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(getattr(self, "level_was", logging.NOTSET))


async def stall(port: int) -> socket.socket:
    """Connect, send the request, read the response headers, then never read again."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: fills at once
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, b"GET /basics/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await loop.sock_recv(sock, 1024)
        if not chunk:
            raise ConnectionError("closed before the headers")
        head += chunk
    assert head.startswith(b"HTTP/1.1 200 ")
    return sock


async def wait_for(check: Callable[[], Awaitable[bool]], limit: float, what: str) -> float:
    began = time.monotonic()
    while not await check():
        if time.monotonic() - began > limit:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - began


@pytest.mark.slow
async def test_stalled_readers_are_ended_and_do_not_slow_a_healthy_client() -> None:
    drops = Drops()
    settings = HubSettings(write_timeout=WRITE_TIMEOUT)
    srv = LiveServer(lambda: basics.create_app(Hub(MemoryBackend(max_events=2000), settings), interval=60)).start()
    stalled: list[socket.socket] = []
    healthy = Healthy()
    stop: list[bool] = []
    try:
        assert srv.server is not None
        # Smaller kernel send buffers than the default (256 KiB), so 1000 stalled connections pin
        # ~130 MB rather than ~600 MB on a machine shared with other tests.
        for server in srv.server.servers:
            for lsock in server.sockets:
                lsock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        hub: Hub = srv.app.state.hub
        drops.attach()
        await healthy.open(srv.port)

        async def subscribers(n: int) -> bool:
            return bool(await on_server(srv, lambda: hub.stats()["subscribers"] == n))

        async def stuck() -> bool:
            return bool(await on_server(srv, lambda: hub.watchdog.waiting(0.3) >= STALLED))

        def publishing(seconds: float) -> asyncio.Future[int]:
            return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(publish(hub, seconds, stop), server_loop(srv)))

        # Without stalled readers.
        t0 = time.time()
        first = await publishing(BASELINE)
        await asyncio.sleep(0.2)
        base_p99, base_n = healthy.p99(t0, time.time())

        for _ in range(STALLED // 100):
            stalled += await asyncio.gather(*(stall(srv.port) for _ in range(100)))
        await wait_for(lambda: subscribers(STALLED + 1), 10, "every reader to subscribe")

        # With them: they fill their buffers, get stuck in flow control, and are ended.
        fill_start = time.time()
        second = publishing(60.0)
        to_stuck = await wait_for(stuck, 20, "every stalled reader to be stuck")
        stuck_start = time.time()
        to_end = await wait_for(lambda: subscribers(1), WRITE_TIMEOUT + 20, "every stalled reader to be ended")
        all_ended = time.time()
        await asyncio.sleep(1.0)
        stop.append(True)
        published = await second
        await asyncio.sleep(0.5)  # the last events arrive

        assert len(drops.at) == STALLED
        first_drop, last_drop = min(drops.at), max(drops.at)
        stuck_p99, stuck_n = healthy.p99(stuck_start, first_drop)
        fill_p99, _ = healthy.p99(fill_start, stuck_start)
        end_p99, _ = healthy.p99(first_drop, all_ended)
        print(
            f"\nhealthy p99: {base_p99 * 1000:.2f} ms alone ({base_n} events), "
            f"{stuck_p99 * 1000:.2f} ms with {STALLED} stuck readers ({stuck_n} events); "
            f"while they filled their buffers ({stuck_start - fill_start:.2f}s): {fill_p99 * 1000:.2f} ms; "
            f"while they were ended ({last_drop - first_drop:.2f}s): {end_p99 * 1000:.2f} ms. "
            f"All stuck {to_stuck:.2f}s after the first publish; ended {first_drop - stuck_start:.2f}s "
            f"to {last_drop - stuck_start:.2f}s after that (write_timeout {WRITE_TIMEOUT:g}s); "
            f"all gone from the hub {all_ended - stuck_start:.2f}s after they were stuck"
        )

        # The stalled readers are gone: from the hub, the watchdog and the server's connections.
        assert hub.stats() == {"topics": 1, "subscribers": 1}
        assert hub.watchdog.ended == STALLED
        assert await on_server(srv, lambda: len(srv.server.server_state.connections)) <= 2  # type: ignore[union-attr]
        # Ended by the write timeout, not before it; and promptly after it.
        assert first_drop - stuck_start >= WRITE_TIMEOUT - 1.5
        assert to_end <= WRITE_TIMEOUT + 5
        # The healthy client got every event, in order, and its latency held while they were stuck.
        assert [n for _, _, n in healthy.samples] == list(range(1, first + 1)) + list(range(1, published + 1))
        assert stuck_n >= 150
        # 2x, plus 5 ms for the scheduler noise of a small machine shared with other test runs
        # (p99 of a few hundred samples is the third-worst one).
        assert stuck_p99 <= 2 * base_p99 + 0.005, (base_p99, stuck_p99)
    finally:
        drops.detach()
        stop.append(True)
        healthy.close()
        for s in stalled:
            s.close()
        srv.stop()
