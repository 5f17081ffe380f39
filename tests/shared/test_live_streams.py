"""Streams over a real uvicorn on a loopback port: headers, resume, shutdown, restart."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from shared import Hub, HubSettings, MemoryBackend
from showcase import basics
from tests.rig import LiveServer, read_events


def basics_server(backend: MemoryBackend | None = None, interval: float = 0.05) -> LiveServer:
    """The /basics/ demo; one backend across restarts stands in for a durable store."""
    backend = backend or MemoryBackend()
    return LiveServer(lambda: basics.create_app(Hub(backend), interval=interval))


def test_stream_headers_and_retry_hint() -> None:
    with basics_server() as srv, httpx.Client(timeout=5) as c, c.stream("GET", srv.url + "/basics/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-accel-buffering"] == "no"
        first = next(r.iter_raw())
        assert first.startswith(b"retry: 3000\n\n")


@pytest.mark.parametrize("how", ["header", "query"])
def test_resume_after_disconnect_gets_exactly_the_missed_events(how: str) -> None:
    with basics_server() as srv:
        url = srv.url + "/basics/events"
        first = read_events(url, n=3)
        last = first[-1].id
        time.sleep(0.5)  # about 10 ticks happen while we are away
        if how == "header":
            again = read_events(url, n=5, headers={"Last-Event-ID": last})
        else:
            again = read_events(f"{url}?last_event_id={last}", n=5)
        epoch, seq = last.rsplit("-", 1)
        assert [e.id for e in again] == [f"{epoch}-{int(seq) + k}" for k in range(1, 6)]
        assert [json.loads(e.data)["n"] for e in again] == [json.loads(first[-1].data)["n"] + k for k in range(1, 6)]


def test_foreign_id_after_a_real_restart_gives_reset() -> None:
    srv = basics_server().start()
    try:
        last = read_events(srv.url + "/basics/events", n=1)[0].id
        srv.factory = lambda: basics.create_app(Hub(MemoryBackend()), interval=0.05)  # memory lost: new epoch
        srv.restart()
        events = read_events(srv.url + "/basics/events", n=2, headers={"Last-Event-ID": last})
        assert events[0].event == "reset"
        assert json.loads(events[0].data)["reason"] == "foreign"
        assert events[1].event == "tick"
    finally:
        srv.stop()


def test_counted_stream_ends_and_resumes() -> None:
    with basics_server() as srv:
        url = srv.url + "/basics/events?count=10&interval=0"
        first = read_events(url, n=4)
        rest = read_events(url, n=7, headers={"Last-Event-ID": first[-1].id})
        assert [e.id for e in first + rest[:-1]] == [str(i) for i in range(1, 11)]
        assert rest[-1].event == "done"
        # Resuming from the last event: 204, nothing more will come (EventSource then stops).
        with httpx.Client() as c:
            r = c.get(url, headers={"Last-Event-ID": "10"})
            assert (r.status_code, r.content) == (204, b"")
            assert c.get(url, headers={"Last-Event-ID": "9"}).status_code == 200


def test_bad_input_is_a_clear_4xx() -> None:
    with basics_server() as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/basics/interval", json={"seconds": 0})
        assert r.status_code == 400
        assert "between 0.05 and 60" in r.json()["detail"]
        bad_json = c.post("/basics/interval", content=b"{nope", headers={"content-type": "application/json"})
        assert bad_json.status_code == 400
        r = c.post("/basics/interval", json={"seconds": 1}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        assert "cross-origin" in r.json()["detail"]
        assert c.get("/basics/events?count=0").status_code == 400


async def _open_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /basics/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"retry: 3000\n\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0]
    return reader, writer


async def test_shutdown_with_1000_open_streams_is_prompt_and_clients_can_resume() -> None:
    backend = MemoryBackend()
    srv = LiveServer(lambda: basics.create_app(Hub(backend, HubSettings()), interval=0.2)).start()
    try:
        conns = []
        for _batch in range(10):
            conns += await asyncio.gather(*(_open_stream(srv.port) for _ in range(100)))
        hub: Hub = srv.app.state.hub
        assert hub.stats()["subscribers"] == 1000
        await asyncio.sleep(0.3)  # at least one tick reaches everybody

        stopped = asyncio.create_task(asyncio.to_thread(srv.stop))
        tails = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in conns)), 10)
        seconds = await stopped
        for _, w in conns:
            w.close()
        assert seconds < 2.0, f"shutdown took {seconds:.2f}s with 1000 open streams"
        last_ids = set()
        retries: list[int] = []
        for tail in tails:
            assert b"event: shutdown" in tail
            final = tail[tail.rindex(b"retry: ") :]  # the shutdown event starts with its hint
            last_ids.add(final.split(b"id: ", 1)[1].split(b"\n", 1)[0].decode())
            retries.append(int(final.split(b"retry: ", 1)[1].split(b"\n", 1)[0]))
        # Everybody was told the same last id, and can resume from it on the restarted server.
        assert len(last_ids) == 1
        # ... and to come back within a second, not all at the same moment.
        assert all(100 <= r <= 1000 for r in retries), (min(retries), max(retries))
        assert max(retries) - min(retries) > 500, "the reconnect hints are not spread"
        assert len(set(retries)) > 100
        srv.start()
        resumed = read_events(srv.url + "/basics/events", n=1, headers={"Last-Event-ID": last_ids.pop()})
        assert resumed[0].event == "tick"
    finally:
        if srv.thread is not None and srv.thread.is_alive():
            srv.stop()


def test_streams_are_cleaned_up_after_clients_disconnect() -> None:
    with basics_server() as srv:
        hub: Hub = srv.app.state.hub
        for _ in range(20):
            read_events(srv.url + "/basics/events", n=1)
        deadline = time.monotonic() + 5
        while hub.stats()["subscribers"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hub.stats() == {"topics": 0, "subscribers": 0}
