"""Graceful stop of the product people run: ``python -m showcase`` with 1,000 streams open across
every app, then SIGTERM (what Ctrl-C, systemd and Docker send). Issue 13, part 1.

What a user must see: the process gone within 2 s; every stream's last event ``shutdown`` with a
``retry`` hint (so clients come back within a second and resume); a ``/bidi/trigger`` waiting for
an answer told 503 + Retry-After at once, as JSON; and a log without a traceback.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.rig import RedisServer

from .rig import EXEC_TOKEN, Product, RawStream, open_streams, wait_body

pytestmark = pytest.mark.slow

# 1,000 streams: how many of each app's.
BASICS, DASHBOARD, CHAT_USERS, CHAT_PER_USER, BIDI, EXEC = 300, 250, 10, 20, 100, 150


async def _streams(product: Product) -> list[RawStream]:
    async with httpx.AsyncClient(base_url=product.url, timeout=10) as http:
        cookies = []
        for i in range(CHAT_USERS):
            r = await http.post("/chat/session", json={"name": f"user{i}"})
            assert r.status_code == 200, r.text
            cookies.append(f"chat_session={r.cookies['chat_session']}")
            http.cookies.clear()
    paths: list[tuple[str, dict[str, str]]] = []
    paths += [("/basics/events", {})] * BASICS
    paths += [("/dashboard/events", {})] * DASHBOARD
    for cookie in cookies:
        paths += [("/chat/rooms/general/events", {"Cookie": cookie})] * (CHAT_PER_USER // 2)
        paths += [("/chat/events", {"Cookie": cookie})] * (CHAT_PER_USER // 2)
    paths += [(f"/bidi/events?client_id=p{i}", {}) for i in range(BIDI)]
    paths += [("/exec/events", {"Authorization": f"Bearer {EXEC_TOKEN}"})] * EXEC
    assert len(paths) == 1000
    streams = await open_streams(product.port, paths)
    bad = [(s.path, s.status) for s in streams if s.status != 200]
    assert not bad, bad[:5]
    # Each has its first bytes (the retry hint) before the stop: it is really open.
    for s in streams:
        await wait_body(s, b"retry:")
    return streams


async def _stop_with_everything_open(product: Product, sig: int = signal.SIGTERM) -> None:
    streams = await _streams(product)
    async with httpx.AsyncClient(base_url=product.url, timeout=30) as http:
        # (Every worker, too, refuses a name that is not the server's: DNS rebinding.)
        foreign = await http.get("/dashboard/snapshot", headers={"Host": "evil.example"})
        assert foreign.status_code == 400, foreign.text
        # A trigger waiting for p0, which never answers (a raw connection reads, never POSTs).
        trigger = asyncio.create_task(http.post("/bidi/trigger", json={"client_id": "p0", "timeout_s": 30}))
        await wait_body(streams[BASICS + DASHBOARD + CHAT_USERS * CHAT_PER_USER], b"event: request")
        sent = await asyncio.to_thread(product.signal, sig)
        answer = await trigger
        answered_after = time.monotonic() - sent
    exit_code = await asyncio.to_thread(product.wait, 10)
    exited_after = time.monotonic() - sent
    print(f"exit {exited_after:.3f} s, trigger answered {answered_after:.3f} s")
    await asyncio.gather(*(s.task for s in streams if s.task is not None))

    # uvicorn re-raises the signal it caught once it is done, as a process stopped by it would.
    assert exit_code in (0, -sig), product.output()[-3000:]
    assert exited_after < 2.0, f"exit took {exited_after:.2f} s"
    # The waiting trigger: 503 at once, JSON, with a retry hint.
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers.get("retry-after") == "1"
    assert "detail" in answer.json()
    assert answered_after < 1.0, f"the trigger was answered after {answered_after:.2f} s"
    # Every stream's last event is `shutdown`, sent with a retry hint of at most a second.
    wrong = []
    for s in streams:
        last_block = s.text().replace("\r\n", "\n").rstrip("\n").rsplit("\n\n", 1)[-1].split("\n")
        retry = [int(line[len("retry: ") :]) for line in last_block if line.startswith("retry: ")]
        if "event: shutdown" not in last_block or not (retry and 100 <= retry[0] <= 1000):
            wrong.append((s.path, last_block))
    assert not wrong, f"{len(wrong)} streams did not end with `shutdown` + retry, e.g. {wrong[:3]}"
    assert json.loads(streams[0].events()[-1][2]) == {"reason": "server shutting down"}
    log = product.output()
    for bad in ("Traceback", "CancelledError", "ERROR", "timeout graceful shutdown exceeded"):
        assert bad not in log, f"{bad!r} in the log:\n{log[-3000:]}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
async def test_showcase_stops_gracefully_with_1000_streams_open(tmp_path: Path, sig: int) -> None:
    product = Product(tmp_path / "data").start()
    try:
        await _stop_with_everything_open(product, sig)
    finally:
        product.stop()


@pytest.mark.redis
async def test_showcase_workers_on_redis_stop_gracefully_with_1000_streams_open(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    product = Product(tmp_path / "data", "--workers", "2", "--backend", redis_server.url).start()
    try:
        await _stop_with_everything_open(product)
    finally:
        product.stop()
