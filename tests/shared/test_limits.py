"""Per-connection limits: open streams per client address (429), and the write watchdog."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from litestar import Litestar, get
from litestar.response import Stream

from shared import Hub, HubSettings, MemoryBackend
from shared.limits import ABORT_CONNECTION, ConnectionLimiter, TooManyStreams, WriteWatchdog
from shared.responses import sse_response
from shared.serve_cli import base_parser, proxy_options
from showcase import basics, bidi
from tests.rig import LiveServer, wait_until


async def _open(port: int, path: str = "/basics/events") -> tuple[bytes, asyncio.StreamWriter]:
    """Open a stream; the status line and whatever came with the headers, and the writer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return head, writer


async def _eventually(check: Callable[[], bool], what: str, limit: float = 10) -> None:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > limit:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(0.02)


# -- the per-client limit, end to end ----------------------------------------------------------


def test_one_stream_over_the_limit_gets_429_naming_the_limit() -> None:
    settings = HubSettings(max_streams_per_client=3, limit_loopback=True)
    with LiveServer(lambda: basics.create_app(Hub(MemoryBackend(), settings), interval=0.2)) as srv:
        hub: Hub = srv.app.state.hub
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            streams = [c.stream("GET", "/basics/events") for _ in range(3)]
            opened = [s.__enter__() for s in streams]
            try:
                assert [r.status_code for r in opened] == [200, 200, 200]
                refused = c.get("/basics/events")
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == "5"
                assert refused.headers["content-type"] == "application/json"
                body = refused.json()
                assert body["status_code"] == 429
                assert "too many open event streams from 127.0.0.1" in body["detail"]
                assert "the limit is 3 per client address" in body["detail"]
                assert body["extra"] == {"limit": 3, "limit_name": "max_streams_per_client"}
                # The refusal cost the client nothing: still three streams, still counted as three.
                assert hub.limiter.stats() == {"clients": 1, "streams": 3}
                wait_until(lambda: hub.stats()["subscribers"] == 3, what="three subscribers")
            finally:
                streams[0].__exit__(None, None, None)
            # Closing one frees its place.
            wait_until(lambda: hub.limiter.stats()["streams"] == 2, what="the closed stream to be released")
            with c.stream("GET", "/basics/events") as again:
                assert again.status_code == 200
                assert next(again.iter_raw()).startswith(b"retry: 3000")
            for s in streams[1:]:
                s.__exit__(None, None, None)
        wait_until(lambda: hub.limiter.stats() == {"clients": 0, "streams": 0}, what="every stream released")


async def test_streams_cut_off_by_the_client_are_released() -> None:
    settings = HubSettings(max_streams_per_client=5, limit_loopback=True)
    with LiveServer(lambda: basics.create_app(Hub(MemoryBackend(), settings), interval=0.05)) as srv:
        hub: Hub = srv.app.state.hub
        for _ in range(4):  # 20 streams through a limit of 5: each batch must be released
            opened = await asyncio.gather(*(_open(srv.port) for _ in range(5)))
            assert all(b" 200 " in head.split(b"\r\n", 1)[0] for head, _ in opened)
            for _, writer in opened:
                writer.transport.abort()  # vanish without a goodbye
            await _eventually(lambda: hub.limiter.stats() == {"clients": 0, "streams": 0}, "streams released")


async def test_loopback_clients_are_not_limited_by_default() -> None:
    with LiveServer(lambda: basics.create_app(Hub(MemoryBackend()), interval=0.2)) as srv:
        opened = await asyncio.gather(*(_open(srv.port) for _ in range(40)))  # over the default 32
        try:
            assert all(b" 200 " in head.split(b"\r\n", 1)[0] for head, _ in opened)
        finally:
            for _, writer in opened:
                writer.close()


async def test_the_limit_covers_bidi_session_streams_too() -> None:
    settings = HubSettings(max_streams_per_client=1, limit_loopback=True)
    with LiveServer(lambda: bidi.create_app(Hub(MemoryBackend(), settings))) as srv:
        head, writer = await _open(srv.port, "/bidi/events?client_id=one")
        try:
            assert b" 200 " in head.split(b"\r\n", 1)[0]
            refused, other = await _open(srv.port, "/bidi/events?client_id=two")
            other.close()
            assert refused.startswith(b"HTTP/1.1 429 ")
            assert b"retry-after: 5" in refused.lower()
        finally:
            writer.close()


def _forwarded_streams(config: dict[str, Any]) -> list[bytes]:
    """Two streams from this host under a limit of one, each claiming another X-Forwarded-For."""

    async def run() -> list[bytes]:
        settings = HubSettings(max_streams_per_client=1, limit_loopback=True)
        with LiveServer(lambda: basics.create_app(Hub(MemoryBackend(), settings), interval=60), config=config) as srv:
            writers, heads = [], []
            try:
                for claimed in ("203.0.113.7", "203.0.113.8"):
                    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
                    writers.append(writer)
                    writer.write(
                        f"GET /basics/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: {claimed}\r\n\r\n".encode()
                    )
                    heads.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10))
            finally:
                for writer in writers:
                    writer.close()
            return [head.split(b"\r\n", 1)[0] for head in heads]

    return asyncio.run(run())


def test_a_client_cannot_escape_the_cap_by_claiming_another_address() -> None:
    # By default X-Forwarded-For is not trusted, even from loopback: both are 127.0.0.1.
    assert _forwarded_streams({}) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 429 Too Many Requests"]


def test_behind_a_proxy_the_forwarded_address_is_the_client() -> None:
    # --proxy-headers (the proxy is this host): each forwarded address is a client of its own.
    args = base_parser("t", "t").parse_args(["--proxy-headers"])
    assert _forwarded_streams(proxy_options(args)) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"]


# -- ConnectionLimiter ---------------------------------------------------------------------------


def _scope(host: str, port: int = 40000) -> dict[str, Any]:
    return {"type": "http", "client": (host, port)}


def test_limiter_counts_per_address_and_frees_on_release() -> None:
    limiter = ConnectionLimiter(2, limit_loopback=False, retry_after=7)
    a = [limiter.acquire(_scope("203.0.113.5", p)) for p in (1, 2)]
    assert a == ["203.0.113.5", "203.0.113.5"]
    with pytest.raises(TooManyStreams) as refused:
        limiter.acquire(_scope("203.0.113.5", 3))
    assert refused.value.limit == 2
    assert refused.value.retry_after == 7
    assert "203.0.113.5" in str(refused.value)
    assert limiter.acquire(_scope("203.0.113.6")) == "203.0.113.6"  # another address: its own count
    limiter.release(a[0])
    assert limiter.acquire(_scope("203.0.113.5", 4)) == "203.0.113.5"
    for key in ("203.0.113.5", "203.0.113.5", "203.0.113.6", None):
        limiter.release(key)
    assert limiter.stats() == {"clients": 0, "streams": 0}  # addresses that left cost nothing


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1"])
def test_loopback_is_exempt_unless_asked(host: str) -> None:
    exempt = ConnectionLimiter(1)
    assert [exempt.acquire(_scope(host, p)) for p in range(5)] == [None] * 5
    strict = ConnectionLimiter(1, limit_loopback=True)
    strict.acquire(_scope(host))
    with pytest.raises(TooManyStreams):
        strict.acquire(_scope(host, 2))


def test_no_limit_and_no_address_are_not_counted() -> None:
    assert ConnectionLimiter(None).acquire(_scope("203.0.113.5")) is None
    limiter = ConnectionLimiter(1)
    assert limiter.acquire({"type": "http", "client": None}) is None
    assert limiter.acquire({"type": "http"}) is None
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionLimiter(0)


def test_hubs_can_share_one_limiter() -> None:
    shared_limiter = ConnectionLimiter(4)
    assert Hub(limiter=shared_limiter).limiter is Hub(limiter=shared_limiter).limiter
    own = Hub(settings=HubSettings(max_streams_per_client=9, limit_loopback=True)).limiter
    assert (own.max_per_client, own.limit_loopback) == (9, True)


# -- WriteWatchdog ------------------------------------------------------------------------------


class _Stream:
    def __init__(self, since: float | None) -> None:
        self.writing_since = since
        self.ended: list[float] = []

    def write_stuck(self, seconds: float) -> None:
        self.ended.append(seconds)


def test_watchdog_ends_only_writes_older_than_the_timeout_and_each_once() -> None:
    now = [100.0]
    dog = WriteWatchdog(5.0, clock=lambda: now[0])
    idle, fresh, stuck = _Stream(None), _Stream(99.0), _Stream(94.0)
    for s in (idle, fresh, stuck):
        dog.add(s)
    assert dog.waiting() == 2
    assert dog.waiting(longer_than=3) == 1
    assert dog.stuck() == [stuck]
    dog.end(stuck)
    dog.end(stuck)
    assert stuck.ended == [6.0]
    assert dog.stats() == {"streams": 2, "waiting": 1, "ended_stuck": 1}
    assert idle.ended == fresh.ended == []
    assert WriteWatchdog(None).stuck() == []
    with pytest.raises(ValueError, match="positive"):
        WriteWatchdog(0)


def _stuck_app(hub: Hub) -> Litestar:
    @get("/events", media_type="text/event-stream")
    async def events() -> Stream:
        return sse_response(hub, "t")

    return Litestar([events], on_startup=[hub.start], on_shutdown=[hub.close], openapi_config=None)


@pytest.mark.parametrize("server_can_abort", [True, False], ids=["abort-hook", "no-hook"])
async def test_a_write_that_never_completes_ends_the_stream(server_can_abort: bool) -> None:
    """The ASGI level: ``send`` blocks as uvicorn's does on a full socket, and never returns."""
    hub = Hub(MemoryBackend(), HubSettings(write_timeout=0.2))
    app = _stuck_app(hub)
    gone = asyncio.Event()
    aborted: list[Any] = []

    def abort(scope: dict[str, Any]) -> bool:
        aborted.append(scope["client"])
        gone.set()  # what a server does: the connection is lost, a pending send returns
        return True

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/events",
        "raw_path": b"/events",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("198.51.100.7", 5000),
        "server": ("127.0.0.1", 80),
        "state": {ABORT_CONNECTION: abort} if server_can_abort else {},
    }

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body" and not gone.is_set():
            await gone.wait()

    async def receive() -> Any:
        await gone.wait()
        return {"type": "http.disconnect"}

    async with app.lifespan():
        began = time.monotonic()
        await asyncio.wait_for(app(scope, receive, send), 5)  # type: ignore[arg-type]
        assert time.monotonic() - began < 2
        assert hub.stats() == {"topics": 0, "subscribers": 0}
        assert hub.watchdog.stats() == {"streams": 0, "waiting": 0, "ended_stuck": 1}
        assert aborted == ([("198.51.100.7", 5000)] if server_can_abort else [])
        assert hub.limiter.stats()["streams"] == 0
