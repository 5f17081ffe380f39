"""The Python client (``shared.client``): reconnecting streams, backoff, and the Responder."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from shared import Hub, MemoryBackend
from shared.client import Backoff, Event, EventStream, Responder, RpcError, Status, StreamError, SyncEventStream
from showcase import basics, bidi
from tests.rig import LiveServer, free_port, until
from tests.shared.correlation_helpers import Peer, serving

# -- Backoff (pure) ------------------------------------------------------------------------------


def test_backoff_honours_retry_doubles_on_failures_caps_and_jitters_upwards() -> None:
    b = Backoff(retry=1.0, max_delay=10.0, jitter=0.25, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    for k, d in enumerate(delays):
        base = min(10.0, 2.0**k)
        assert base <= d <= min(10.0, base * 1.25), (k, d)
    b.opened()
    b.server_retry(200)  # a `retry: 200` field
    assert 0.2 <= b.next_delay() <= 0.25
    assert 0.4 <= b.next_delay() <= 0.5
    assert b.next_delay(retry_after=3) == pytest.approx(3, rel=0.25)  # Retry-After wins
    spread = {round(Backoff(rng=random.Random(i)).next_delay(), 3) for i in range(20)}
    assert len(spread) > 10  # clients do not all come back in the same millisecond


# -- EventStream against scripted servers ----------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    chunks: list[bytes] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # keep the response open until the client goes away
    content_type: str = "text/event-stream"


class Scripted:
    """A raw ASGI app answering its n-th request with ``replies[n]`` (the last one repeats)."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.seen: list[dict[str, str]] = []  # headers of every request
        self.times: list[float] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        reply = self.replies[min(len(self.seen), len(self.replies) - 1)]
        self.seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        self.times.append(time.monotonic())
        headers = [(b"content-type", reply.content_type.encode())]
        headers += [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        for chunk in reply.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if reply.hang:
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def collect(stream: EventStream, n: int, timeout: float = 15) -> list[Event]:
    out: list[Event] = []

    async def run() -> None:
        async for ev in stream:
            out.append(ev)
            if len(out) >= n:
                return

    async with stream:
        await asyncio.wait_for(run(), timeout)
    return out


async def test_reconnects_honouring_retry_and_resumes_from_the_last_id() -> None:
    app = Scripted(
        [
            Reply(chunks=[b"retry: 200\n\n", b": ping\n\n", b"id: 1\ndata: a\n\n", b"id: 2\ndata: b\n\n"]),
            Reply(chunks=[b"id: 3\ndata: c\n\n", b": ping\n\n", b"data: no id\n\n"]),
            Reply(status=503, headers={"retry-after": "0"}, content_type="application/json", chunks=[b"{}"]),
            Reply(chunks=[b'event: shutdown\nid: 4\nretry: 100\ndata: {"reason": "bye"}\n\n']),
            Reply(chunks=[b'event: reset\nid: 9\ndata: {"reason": "evicted"}\n\n', b"id: 10\ndata: d\n\n"], hang=True),
        ]
    )
    statuses: list[Status] = []
    async with serving(app) as base:
        # A slow default (5 s) shows that the server's `retry: 200` is what we waited.
        stream = EventStream(base + "/s", backoff=Backoff(retry=5.0), on_status=statuses.append)
        events = await collect(stream, 6)

    assert [(e.event, e.data, e.id) for e in events] == [
        ("message", "a", "1"),
        ("message", "b", "2"),
        ("message", "c", "3"),
        ("message", "no id", "3"),  # an event without id: carries the last one, as in a browser
        ("reset", '{"reason": "evicted"}', "9"),  # handed to the caller: reload state
        ("message", "d", "10"),
    ]
    assert events[4].is_reset
    assert not events[5].is_reset
    # No phantom events for comment-only blocks, and `shutdown` is not an event for the caller.
    assert [h.get("last-event-id") for h in app.seen] == [None, "2", "3", "3", "4"]
    assert all(h["accept"] == "text/event-stream" for h in app.seen)
    assert app.times[1] - app.times[0] < 4  # waited about 0.2 s (the server's retry), not 5 s
    retrying = [s for s in statuses if s.state == "retrying"]
    assert "HTTP 503" in retrying[2].detail
    assert retrying[3].detail == "the server is shutting down"
    assert retrying[3].delay is not None
    assert retrying[3].delay <= 0.125 + 0.01
    assert [s.state for s in statuses].count("open") == 4


@pytest.mark.parametrize(
    ("reply", "words", "code"),
    [
        (Reply(404, [b'{"detail": "no such room"}'], content_type="application/json"), "no such room", 404),
        (Reply(403, [b'{"detail": "wrong token"}'], content_type="application/json"), "wrong token", 403),
        (Reply(204), "asked us to stop", 204),
        (Reply(200, [b"<html>"], content_type="text/html"), "not an event stream", 200),
    ],
    ids=["404", "403", "204", "html"],
)
async def test_refusals_that_waiting_cannot_fix_end_with_stream_error(reply: Reply, words: str, code: int) -> None:
    async with serving(Scripted([reply])) as base:
        with pytest.raises(StreamError) as info:
            await collect(EventStream(base + "/s"), 1)
    assert words in str(info.value)
    assert info.value.status_code == code


async def test_gives_up_after_max_attempts_when_nothing_listens() -> None:
    statuses: list[Status] = []
    stream = EventStream(
        f"http://127.0.0.1:{free_port()}/s", backoff=Backoff(retry=0.01), max_attempts=3, on_status=statuses.append
    )
    with pytest.raises(StreamError, match="gave up after 3 attempts; last: cannot connect"):
        await collect(stream, 1)
    assert [s.state for s in statuses] == ["retrying"] * 3 + ["failed", "closed"]


async def test_a_silent_dead_connection_is_detected_by_the_read_timeout() -> None:
    app = Scripted([Reply(chunks=[b"retry: 10\nid: 1\ndata: x\n\n"], hang=True), Reply(chunks=[b"id: 2\ndata: y\n\n"])])
    async with serving(app) as base:
        events = await collect(EventStream(base + "/s", read_timeout=0.5), 2)
    assert [e.data for e in events] == ["x", "y"]
    assert app.seen[1]["last-event-id"] == "1"


def test_sync_stream_resumes_across_a_real_server_restart_without_loss_or_duplicates() -> None:
    backend = MemoryBackend()  # survives the restart, standing in for a durable store
    srv = LiveServer(lambda: basics.create_app(Hub(backend), interval=0.05)).start()
    states: list[str] = []
    ids: list[str] = []
    try:
        with SyncEventStream(srv.url + "/basics/events", on_status=lambda s: states.append(s.state)) as stream:
            for ev in stream:
                assert ev.event == "tick"
                ids.append(ev.id or "")
                if len(ids) == 5:
                    srv.restart()  # graceful: our stream gets `shutdown` with a retry hint of at most 1 s
                if len(ids) == 15:
                    break
    finally:
        srv.stop()
    seqs = [int(i.rsplit("-", 1)[1]) for i in ids]
    assert seqs == list(range(seqs[0], seqs[0] + 15))  # one unbroken run: nothing lost, nothing twice
    assert states.count("open") >= 2  # reconnected...
    assert "retrying" in states  # ...after being told to


# -- Responder -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bidi_app(port: int = 0, grace: float = 30.0) -> AsyncIterator[tuple[str, httpx.AsyncClient, Any]]:
    app = bidi.create_app(grace=grace)
    async with serving(app, port=port) as base, httpx.AsyncClient(timeout=30) as http:
        yield base, http, app


async def trigger(
    http: httpx.AsyncClient, base: str, client_id: str, method: str, params: Any = None, **kw: Any
) -> Any:
    r = await http.post(base + "/bidi/trigger", json={"client_id": client_id, "method": method, "params": params, **kw})
    return r


def responder(base: str, client_id: str, **kw: Any) -> Responder:
    kw.setdefault("backoff", Backoff(retry=0.05, max_delay=0.2))
    return Responder(base + "/bidi/events", client_id=client_id, **kw)


async def test_responder_answers_with_sync_and_async_handlers_and_json_rpc_errors() -> None:
    async with bidi_app() as (base, http, _):
        r = responder(base, "worker")
        r.register("add", lambda p: p["a"] + p["b"])

        @r.method("shout")
        async def shout(params: Any) -> str:
            await asyncio.sleep(0.01)
            return str(params["text"]).upper()

        @r.method("boom")
        def boom(params: Any) -> None:
            raise ValueError("bad input")

        @r.method("picky")
        def picky(params: Any) -> None:
            raise RpcError(-32050, "not today", {"try": "tomorrow"})

        async with r:
            assert r.client_id == "worker"
            assert r.connected
            assert r.respond_url == base + "/bidi/respond"  # the sibling of the events URL
            assert (await trigger(http, base, "worker", "add", {"a": 2, "b": 3})).json()["result"] == 5
            assert (await trigger(http, base, "worker", "shout", {"text": "hi"})).json()["result"] == "HI"
            errors = {m: await trigger(http, base, "worker", m, {}) for m in ("boom", "picky", "nope")}
        assert {m: e.status_code for m, e in errors.items()} == {"boom": 502, "picky": 502, "nope": 502}
        assert errors["boom"].json()["extra"]["code"] == -32603
        assert errors["boom"].json()["extra"]["message"] == "ValueError: bad input"
        assert errors["picky"].json()["extra"] == {"code": -32050, "message": "not today", "data": {"try": "tomorrow"}}
        assert errors["nope"].json()["extra"]["code"] == -32601


async def test_responder_cancels_the_handler_when_the_server_gives_up() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()
    async with bidi_app() as (base, http, _):
        r = responder(base, "sleepy")

        @r.method("wait")
        async def wait(params: Any) -> None:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        async with r:
            res = await trigger(http, base, "sleepy", "wait", timeout_s=0.5)
            assert res.status_code == 504
            await asyncio.wait_for(cancelled.wait(), 5)  # `event: cancel` reached the handler
            assert started.is_set()
            assert r.answered == 0


class Recording(Responder):
    """Notes every request event it receives, re-sent ones included."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[str] = []

    def _on_request(self, msg: dict[str, Any]) -> None:
        self.received.append(msg["id"])
        super()._on_request(msg)


class Cutter:
    """A loopback TCP proxy whose connections can all be cut at once: a network drop."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.links: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self.server is not None
        self.server.close()

    def cut(self) -> None:
        for writer in self.links:
            writer.transport.abort()
        self.links.clear()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_responder_survives_a_network_drop_and_runs_a_resent_request_once() -> None:
    release = asyncio.Event()
    calls: list[Any] = []
    async with bidi_app() as (base, http, _):
        cutter = Cutter(int(base.rsplit(":", 1)[1]))
        async with cutter as via_proxy:
            r = Recording(via_proxy + "/bidi/events", client_id="mobile", backoff=Backoff(retry=0.05, max_delay=0.2))

            @r.method("work")
            async def work(params: Any) -> str:
                calls.append(params)
                await release.wait()
                return f"done {params['n']}"

            async with r:
                token = r.token
                first = asyncio.create_task(trigger(http, base, "mobile", "work", {"n": 1}, timeout_s=20))
                await until(lambda: len(r.received) == 1)
                # The network drops while the handler works: the responder reconnects with its
                # client id and token, and the server sends the still-pending request again.
                cutter.cut()
                await until(lambda: len(r.received) == 2)
                assert r.received[0] == r.received[1]
                release.set()
                res = await first
                assert res.status_code == 200, res.text
                assert res.json()["result"] == "done 1"
                assert calls == [{"n": 1}]  # the re-sent copy was not run again
                assert r.token == token  # the same session, taken over cleanly
                again = await trigger(http, base, "mobile", "work", {"n": 2}, timeout_s=20)
                assert again.json()["result"] == "done 2"


async def test_responder_keeps_working_across_a_server_restart() -> None:
    port = free_port()
    r = responder(f"http://127.0.0.1:{port}", "steady")
    r.register("ping", lambda params: "pong")
    async with contextlib.AsyncExitStack() as stack:
        async with bidi_app(port) as (base, http, _):
            await stack.enter_async_context(r)
            assert (await trigger(http, base, "steady", "ping")).json()["result"] == "pong"
            old_token = r.token
        # The server is gone (the responder was told `shutdown`, then finds nobody listening).
        async with bidi_app(port) as (base, http, _):
            await until(lambda: r.connected and r.token != old_token)  # a new session, same id
            assert (await trigger(http, base, "steady", "ping")).json()["result"] == "pong"


async def test_responder_with_a_client_id_in_use_fails_clearly() -> None:
    async with bidi_app() as (base, http, _):
        owner = await Peer(http, base, "taken").connect()
        with pytest.raises(StreamError) as info:
            async with responder(base, "taken"):
                pass
        assert info.value.status_code == 409
        assert "in use" in str(info.value)
        await owner.close()
