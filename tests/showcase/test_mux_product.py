"""The shared connection (issue 15, docs/mux.md) in the product people run: ``python -m showcase``
as a child process, its mux stream through a drain and a SIGTERM, its /metrics, and with
``--workers 2`` on a real Redis, a POST that lands on the other worker."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.mux_rig import MuxClient
from tests.product.rig import EXEC_TOKEN, Product
from tests.rig import RedisServer

METRICS_TOKEN = "mux-metrics-token-0123456789"


def _gauge(text: str, name: str, label: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {label} not in /metrics")


async def test_sigterm_ends_the_mux_stream_with_shutdown_and_the_process_exits(tmp_path: Path) -> None:
    product = Product(tmp_path, "--drain-seconds", "1", "--metrics-token", METRICS_TOKEN).start()
    try:
        async with httpx.AsyncClient(base_url=product.url, timeout=10) as http:
            assert (await http.post("/chat/session", json={"name": "eve"})).status_code == 200
            async with MuxClient(product.url, cookies=http.cookies) as mux:
                r = await mux.post(
                    {
                        "subscribe": [
                            {"k": "ticks", "path": "/basics/events"},
                            {"k": "room", "path": "/chat/rooms/general/events"},
                            {"k": "lobby", "path": "/chat/events"},
                        ]
                    }
                )
                assert r.status_code == 200, r.text
                for k in ("ticks", "room", "lobby"):
                    await mux.state(k, "open")
                metrics = await http.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
                assert metrics.status_code == 200
                assert _gauge(metrics.text, "sse_streams_open", 'topic_class="mux"') == 1
                assert _gauge(metrics.text, "sse_mux_topics_open") == 3

                sent = await asyncio.to_thread(product.signal, signal.SIGTERM)
                # Draining (once /readyz says so): a new mux is refused like any new stream; the
                # open one carries on.
                deadline = time.monotonic() + 5
                while (await http.get("/readyz")).status_code != 503:
                    assert time.monotonic() < deadline, "the drain did not begin"
                    await asyncio.sleep(0.02)
                again = await http.get("/sse/mux")
                assert again.status_code == 503, again.text
                assert again.headers["retry-after"] == "1"
                assert again.json()["detail"].startswith("server is shutting down")
                assert not mux.ended
                await mux.until(lambda: mux.ended, timeout=10, what="the end of the mux stream")
                ended_after = time.monotonic() - sent
        exit_code = await asyncio.to_thread(product.wait, 10)
        exited_after = time.monotonic() - sent
    finally:
        product.stop()
    print(f"mux stream ended {ended_after:.2f} s after SIGTERM (drain 1 s), process exited {exited_after:.2f} s")
    last = mux.events[-1]
    assert last.event == "shutdown", mux.summary()
    assert last.retry == 1000
    # No topic was reported `closed`: the whole connection ends, the client re-opens it.
    assert not [s for s in mux._docs("t") if s["state"] == "closed"]
    # uvicorn re-raises the signal it caught once it is done, as a process stopped by it would.
    assert exit_code in (0, -signal.SIGTERM), product.output()[-3000:]
    assert 0.9 < ended_after < 4.0
    assert exited_after < 5.0
    assert "Traceback" not in product.output()


@pytest.mark.redis
@pytest.mark.slow
async def test_with_two_workers_a_post_reaching_the_other_worker_is_forwarded(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    product = Product(tmp_path, "--workers", "2", "--backend", redis_server.url).start(timeout=90)
    try:
        async with MuxClient(product.url) as mux:
            owner = mux.conn.split(".", 1)[0]
            # Each POST on a fresh connection: SO_REUSEPORT spreads them over both workers.
            statuses = []
            for i in range(12):
                async with httpx.AsyncClient(base_url=product.url, timeout=15) as other:
                    r = await other.post(
                        f"/sse/mux/{mux.conn}",
                        json={"subscribe": [{"k": f"c{i}", "path": "/basics/events?count=2&interval=0"}]},
                        headers={"authorization": f"Bearer {mux.token}"},
                    )
                    statuses.append(r.status_code)
            assert statuses == [200] * 12, statuses
            for i in range(12):
                await mux.state(f"c{i}", "closed", timeout=15)
                assert [f["id"] for f in mux.frames(f"c{i}")] == ["1", "2", "2"]  # tick, tick, done
            # The owner's checks hold when forwarded: a wrong token is 401 from either worker.
            async with httpx.AsyncClient(base_url=product.url, timeout=15) as other:
                wrong = [
                    (
                        await other.post(f"/sse/mux/{mux.conn}", json={}, headers={"authorization": "Bearer nope"})
                    ).status_code
                    for _ in range(6)
                ]
            assert wrong == [401] * 6
            # A connection id of no live worker: 404, the client reconnects.
            async with httpx.AsyncClient(base_url=product.url, timeout=15) as other:
                gone = await other.post(
                    f"/sse/mux/{'f' * 12}.{mux.conn.split('.', 1)[1]}",
                    json={},
                    headers={"authorization": f"Bearer {mux.token}"},
                )
            assert gone.status_code == 404, gone.text
            assert owner != "f" * 12
    finally:
        product.stop()


@pytest.mark.parametrize("module", ["chat", "dashboard", "remote_exec"])
async def test_each_app_served_alone_answers_the_mux(tmp_path: Path, module: str) -> None:
    product = Product(tmp_path, module=module).start(ready_path="/healthz")
    try:
        async with httpx.AsyncClient(base_url=product.url, timeout=10) as http:
            topic: dict[str, str] = {"k": "a"}
            if module == "chat":
                assert (await http.post("/chat/session", json={"name": "gus"})).status_code == 200
                topic["path"] = "/chat/rooms/general/events"
            elif module == "dashboard":
                topic["path"] = "/dashboard/events"
            else:  # the exec token given per topic, as a page with a viewer token would
                topic |= {"path": "/exec/events", "authorization": f"Bearer {EXEC_TOKEN}"}
            async with MuxClient(product.url, cookies=http.cookies) as mux:
                assert (
                    await mux.post({"subscribe": [topic, {"k": "b", "path": topic["path"].split("?")[0]}]})
                ).status_code == 200
                await mux.state("a", "open")
                if module == "remote_exec":
                    refused = await mux.state("b", "error")  # the same stream without the token
                    assert refused["status"] == 401
                    run = await http.post(
                        "/exec/runs", json={"argv": ["echo", "hi"]}, headers={"authorization": f"Bearer {EXEC_TOKEN}"}
                    )
                    assert run.status_code == 201, run.text
                    await mux.until(lambda: any(run.json()["id"] in f["d"] for f in mux.frames("a")), what="the run")
                else:
                    await mux.state("b", "open")
                    await mux.count("a", 1)
    finally:
        product.stop()
