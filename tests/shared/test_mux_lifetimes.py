"""How a mux connection ends (issue 15, docs/mux.md sections 5 and 6): at a server stop, and for
a client that stopped reading; each time every topic's sub-request is told and awaited, so the
hub is left with no subscriber. On a real uvicorn (``tests.rig.LiveServer``)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx

from bench.server import create_hub_app
from shared.mux import Mux
from tests.mux_rig import MuxClient
from tests.rig import LiveServer


def _hub_subscribers(mux: Mux) -> int:
    return int(mux.app.state.hub.stats()["subscribers"])


async def test_a_server_stop_ends_the_mux_with_shutdown_and_releases_every_topic() -> None:
    srv = LiveServer(lambda: Mux(create_hub_app())).start()
    try:
        mux_app: Mux = srv.app
        async with MuxClient(srv.url) as mux:
            r = await mux.post({"subscribe": [{"k": f"t{i}", "path": "/events"} for i in range(5)]})
            assert r.status_code == 200, r.text
            for i in range(5):
                await mux.state(f"t{i}", "open")
            assert _hub_subscribers(mux_app) == 5
            stopped = await asyncio.to_thread(srv.stop)
            await mux.until(lambda: mux.ended, what="the end of the stream")
    finally:
        if srv.thread is not None and srv.thread.is_alive():
            srv.stop()
    assert mux.events[-1].event == "shutdown"
    assert mux.events[-1].retry == 1000
    assert _hub_subscribers(mux_app) == 0
    assert mux_app.conns == {}
    # The mux ends its streams itself: no waiting for uvicorn's graceful timeout (2 s).
    assert stopped < 1.5, stopped


async def test_a_client_that_stops_reading_is_dropped_and_its_topics_released() -> None:
    srv = LiveServer(lambda: Mux(create_hub_app(), write_timeout=1.0)).start()
    try:
        mux_app: Mux = srv.app
        # A raw connection with a small receive buffer, which reads the first frame, then stops.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET /sse/mux HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 200 " in head
        first = await reader.readuntil(b"}\n\n")
        hello = json.loads(first[first.index(b"data: ") + 6 : first.rindex(b"}") + 1])
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
            r = await http.post(
                f"/sse/mux/{hello['conn']}",
                json={"subscribe": [{"k": "a", "path": "/events"}, {"k": "b", "path": "/events"}]},
                headers={"authorization": f"Bearer {hello['token']}"},
            )
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 10
            while _hub_subscribers(mux_app) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            began = time.monotonic()
            # 24 MiB for a client that reads nothing: kernel buffers, then the outbox (1 MiB) fill.
            publish = await http.post("/publish", json={"n": 192, "size": 128 * 1024})
            assert publish.status_code == 200
            while mux_app.conns or _hub_subscribers(mux_app):
                assert time.monotonic() - began < 15, (mux_app.mux_stats(), _hub_subscribers(mux_app))
                await asyncio.sleep(0.05)
            dropped_after = time.monotonic() - began
        writer.close()
    finally:
        srv.stop()
    print(f"a client that stopped reading was dropped {dropped_after:.2f} s after the publish began")
    assert mux_app.watchdog.ended == 1
