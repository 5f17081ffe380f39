"""Issue 19: ``/healthz``, ``/readyz`` and the drain before a stop, on the product as users run
it (``python -m showcase`` in a child process; a real redis-server where Redis is the point)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.rig import RedisServer, wait_until

from .rig import ROOT, Product, open_streams, wait_body

pytestmark = pytest.mark.slow

DRAIN_S = 1.5


def test_alive_and_ready_with_every_check_named(tmp_path: Path) -> None:
    product = Product(tmp_path).start()
    try:
        assert httpx.get(product.url + "/healthz").json() == {"status": "alive"}
        r = httpx.get(product.url + "/readyz")
        assert r.status_code == 200
        assert r.json() == {"ready": True, "checks": {"server": "ok", "memory": "ok", "sqlite": "ok"}}
    finally:
        product.stop()


async def test_sigterm_turns_not_ready_first_then_ends_the_streams(tmp_path: Path) -> None:
    product = Product(tmp_path, "--drain-seconds", str(DRAIN_S)).start()
    try:
        none: dict[str, str] = {}
        paths = [("/basics/events", none)] * 20 + [("/dashboard/events", {})] * 10
        streams = await open_streams(product.port, paths)
        for s in streams:
            await wait_body(s, b"retry:")
        sent = product.signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=product.url, timeout=5) as http:
            # At once: not ready, and a new stream is refused so a proxy retries it elsewhere.
            while (await http.get("/readyz")).status_code != 503:
                assert time.monotonic() - sent < 0.5, "still ready 0.5 s after SIGTERM"
                await asyncio.sleep(0.02)
            ready = await http.get("/readyz")
            assert ready.json()["ready"] is False
            assert ready.json()["checks"]["server"].startswith("stopping")
            # Every app's new stream, the bidi demo's too (its hub sits behind its lifespan object).
            for path in ("/basics/events", "/dashboard/events", "/bidi/events?client_id=late"):
                refused = await http.get(path)
                assert refused.status_code == 503, (path, refused.status_code)
                assert refused.headers["retry-after"] == "1"
            # ...while the open streams and every other request are still served.
            assert (await http.get("/basics/interval")).status_code == 200
        assert time.monotonic() - sent < DRAIN_S - 0.3
        assert all(s.closed_at is None and b"event: shutdown" not in s.raw for s in streams)
        # Then, after the drain, each stream's last event is `shutdown` and the process ends.
        rc = await asyncio.to_thread(product.wait, DRAIN_S + 5)
        took = time.monotonic() - sent
        assert rc in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled, for its parent
        assert DRAIN_S <= took < DRAIN_S + 2.5, took
        for s in streams:
            await asyncio.wait_for(s.task, 5)  # type: ignore[arg-type]
            assert s.events()[-1][0] == "shutdown", s.events()[-3:]
            assert (s.closed_at or 0) - sent >= DRAIN_S - 0.1
        assert "Traceback" not in product.output()
    finally:
        product.stop()


def test_not_ready_while_redis_is_down_and_ready_again_when_it_is_back(tmp_path: Path) -> None:
    redis = RedisServer()
    with redis.running():
        product = Product(tmp_path, "--backend", redis.url).start()
        try:
            checks = httpx.get(product.url + "/readyz").json()["checks"]
            assert checks[f"redis at 127.0.0.1:{redis.port}"] == "ok"
            redis.stop()
            began = time.monotonic()
            r = httpx.get(product.url + "/readyz", timeout=10)
            assert r.status_code == 503
            assert time.monotonic() - began < 3, "a down Redis must not hang the probe"
            assert r.json()["checks"][f"redis at 127.0.0.1:{redis.port}"].startswith("unreachable")
            assert httpx.get(product.url + "/healthz").status_code == 200  # alive all the same
            redis.start()
            wait_until(lambda: httpx.get(product.url + "/readyz", timeout=5).status_code == 200, 15, "ready again")
        finally:
            product.stop()


def test_each_app_alone_documents_them_in_its_openapi(tmp_path: Path) -> None:
    product = Product(tmp_path, module="chat").start(ready_path="/healthz")
    try:
        assert httpx.get(product.url + "/readyz").json()["ready"] is True
        paths = httpx.get(product.url + "/chat/schema/openapi.json").json()["paths"]
        assert {"/healthz", "/readyz"} <= set(paths)
    finally:
        product.stop()


def test_a_bad_drain_value_is_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "showcase", "--drain-seconds", "-1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("must be between 0 and 600 seconds, not -1")
