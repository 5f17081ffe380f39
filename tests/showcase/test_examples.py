"""The examples newcomers copy (examples/minimal, examples/toy) work as their docstrings say:
started with ``python -m ...`` as a user would, listened to with the shared Python client
(shared.client.EventStream), and the toy mounted next to another app through the app contract
(shared.apps.App + shared.mount.Mounts), whose stop ends its stream with ``shutdown``."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar

from examples import minimal, toy
from shared.apps import App, shutdown_groups
from shared.client import Event, EventStream, Status
from shared.mount import Mounts
from tests.product.rig import Product
from tests.rig import LiveServer

TIMEOUT = 15.0


async def first_events(url: str, n: int, after_open: Callable[[], Any] | None = None) -> list[Event]:
    """The first ``n`` events (comments and retries aside) of ``url``; ``after_open`` runs once the stream is open."""
    opened = asyncio.Event()

    def status(s: Status) -> None:
        if s.state == "open":
            opened.set()

    got: list[Event] = []

    async def listen() -> None:
        async with EventStream(url, on_status=status, max_attempts=1) as events:
            async for ev in events:
                got.append(ev)
                if len(got) == n:
                    return

    task = asyncio.ensure_future(listen())
    await asyncio.wait_for(opened.wait(), TIMEOUT)
    if after_open is not None:
        await asyncio.to_thread(after_open)
    await asyncio.wait_for(task, TIMEOUT)
    return got


def test_the_minimal_example_streams_what_is_published(tmp_path: Path) -> None:
    product = Product(tmp_path / "data", module="examples.minimal").start(ready_path="/healthz")
    try:

        def publish() -> None:
            r = httpx.post(product.url + "/minimal/publish", json={"text": "hello"}, timeout=10)
            assert r.status_code == 200, r.text
            assert r.json()["id"]

        (ev,) = asyncio.run(first_events(product.url + "/minimal/events", 1, publish))
        assert ev.event == "message"
        assert json.loads(ev.data) == {"text": "hello"}
        assert ev.id  # resumable: a reconnect sends it as Last-Event-ID
        r = httpx.post(product.url + "/minimal/publish", json={"text": ""}, timeout=10)
        assert r.status_code == 422
        assert "1 to 1000 characters" in r.json()["detail"]
    finally:
        product.stop()
    assert "Application shutdown complete" in product.output()  # a clean stop on SIGTERM


def test_the_toy_poll_tells_every_page_the_new_tally(tmp_path: Path) -> None:
    product = Product(tmp_path / "data", module="examples.toy").start(ready_path="/poll/tally")
    try:
        page = httpx.get(product.url + "/poll/", timeout=10)
        assert page.status_code == 200
        assert "/poll/static/poll.js" in page.text
        # The page's scripts: its own, and the shared EventSource wrapper behind it.
        assert httpx.get(product.url + "/poll/static/sse.js", timeout=10).status_code == 200

        def vote() -> None:
            r = httpx.post(product.url + "/poll/vote", json={"option": "SSE"}, timeout=10)
            assert r.status_code == 200, r.text

        now, after = asyncio.run(first_events(product.url + "/poll/events", 2, vote))
        assert (now.event, json.loads(now.data)["total"]) == ("tally", 0)  # the counts on connect
        assert after.event == "tally"
        assert json.loads(after.data)["counts"]["SSE"] == 1
        r = httpx.post(product.url + "/poll/vote", json={"option": "carrier pigeon"}, timeout=10)
        assert r.status_code == 422
        assert "vote for one of SSE, WebSockets, long polling" in r.json()["detail"]
    finally:
        product.stop()


def test_the_toy_mounts_next_to_another_app_through_the_contract() -> None:
    apps: list[App] = []

    def build() -> Mounts:
        apps[:] = [toy.create_app(options=("red", "blue")), minimal.create_app()]
        return Mounts(apps, fallback=Litestar(route_handlers=[], openapi_config=None))

    srv = LiveServer(build).start()
    try:
        poll, mini = apps
        assert (poll.prefix, mini.prefix) == ("/poll", "/minimal")
        assert poll.settings == toy.PollSettings(options=("red", "blue"))
        # What the server closes when it stops: each app's closables, as if it ran alone.
        assert srv.server is not None
        groups = [tuple(map(id, g)) for g in shutdown_groups(srv.server.served_app())]
        for app in apps:
            assert tuple(map(id, app.closables)) in groups

        async def vote_then_stop() -> list[Event]:
            def vote() -> None:
                assert httpx.post(srv.url + "/poll/vote", json={"option": "red"}, timeout=10).status_code == 200
                r = httpx.post(srv.url + "/minimal/publish", json={"text": "side by side"}, timeout=10)
                assert r.status_code == 200

            return await first_events(srv.url + "/poll/events", 2, vote)

        now, after = asyncio.run(vote_then_stop())
        assert json.loads(now.data)["counts"] == {"red": 0, "blue": 0}
        assert json.loads(after.data)["counts"] == {"red": 1, "blue": 0}

        # The stop ends the open stream with the hub's `shutdown` event (the shared client
        # reconnects on it without showing it, so this reads the raw stream).
        raw = b""
        stopper = threading.Thread(target=srv.stop)
        with httpx.stream("GET", srv.url + "/poll/events", timeout=TIMEOUT) as r:
            for chunk in r.iter_bytes():
                raw += chunk
                if b"event: tally" in raw and not stopper.is_alive() and stopper.ident is None:
                    stopper.start()
        stopper.join(TIMEOUT)
        assert b"event: shutdown" in raw
    finally:
        srv.stop()
