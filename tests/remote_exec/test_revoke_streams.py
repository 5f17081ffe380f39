"""Issue 14 part 5: a viewer token that is revoked or expires ends the streams opened with it.

A guard checks the token once, when a stream opens; before this, a revoked viewer went on
watching for as long as it kept the stream open. One real uvicorn, real runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from remote_exec.credentials import ViewerToken
from tests.rig import LiveServer

from .helpers import ExecClient, Watcher, exec_server, make_policy

TICKER = "import time\nfor i in range(600):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.1)\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("revoke")
    (base / "work").mkdir()
    with exec_server(base / "data", make_policy(base / "work")) as srv:
        yield srv


@pytest.fixture
def ex(server: LiveServer) -> Iterator[ExecClient]:
    with ExecClient(server.url) as client:
        yield client


def _ended_within(watcher: Watcher, since: float, seconds: float) -> float:
    assert watcher.done.wait(seconds + 5), f"{watcher.path} still open {seconds + 5:.0f} s after; {watcher.names()}"
    assert watcher.error is None, watcher.error
    assert watcher.ended is not None
    took = watcher.ended - since
    assert took <= seconds, f"{watcher.path} ended {took:.2f} s after"
    return took


def test_revoking_a_viewer_token_ends_its_open_streams(ex: ExecClient, server: LiveServer) -> None:
    run = ex.start(argv=["python3", "-c", TICKER], timeout_s=90)
    rid = run["id"]
    minted = ex.http.post("/exec/tokens", json={"label": "guest"}).json()
    token = minted["token"]
    # The page's way too: a session cookie made with that token.
    with httpx.Client(base_url=server.url, headers={"Origin": server.url}) as page:
        assert page.post("/exec/login", json={"token": token}).status_code == 200
        cookies = {"exec_session": page.cookies["exec_session"]}
    watchers = [
        Watcher(server.url, f"/exec/runs/{rid}/events", token=token),
        Watcher(server.url, "/exec/events", token=token),
        Watcher(server.url, f"/exec/runs/{rid}/events", cookies=cookies),
        Watcher(server.url, "/exec/events", cookies=cookies),
    ]
    operator = Watcher(server.url, f"/exec/runs/{rid}/events", token=ex.http.headers["authorization"][7:])
    try:
        for w in (*watchers, operator):
            assert w.opened.wait(10)
            assert w.status == 200
        watchers[0].wait_for("stdout", 10)
        watchers[2].wait_for("stdout", 10)
        time.sleep(0.3)
        revoked_at = time.monotonic()
        assert ex.http.delete(f"/exec/tokens/{minted['id']}").status_code == 200
        took = [_ended_within(w, revoked_at, 2.0) for w in watchers]
        for w in watchers:
            last = w.events[-1][1]
            assert last.event == "revoked", w.names()[-3:]
            assert json.loads(last.data)["reason"] == "revoked"
        # Coming back with it: 401, so the browser's EventSource stops.
        again = Watcher(server.url, f"/exec/runs/{rid}/events", token=token)
        assert again.done.wait(10)
        assert again.status == 401
        # The operator's stream of the same run goes on.
        assert not operator.done.is_set()
        count = len(operator.events)
        time.sleep(0.5)
        assert len(operator.events) > count
        print(f"streams ended {', '.join(f'{t:.2f}' for t in took)} s after the revoke")
    finally:
        ex.http.post(f"/exec/runs/{rid}/terminate")
        for w in (*watchers, operator):
            w.close()


def _plant(server: LiveServer, secret: str, ttl_s: float) -> None:
    """A viewer token that expires in ``ttl_s`` seconds (the API's minimum is 60 s)."""
    assert server.server is not None
    assert server.server.loop is not None
    now = time.time()
    token = ViewerToken("short1", hashlib.sha256(secret.encode()).hexdigest(), None, "short", "test", now, now + ttl_s)
    credentials = server.app.state.exec_app.auth.credentials
    asyncio.run_coroutine_threadsafe(credentials.add_token(token), server.server.loop).result(5)


def test_an_expiring_viewer_token_ends_its_open_streams(ex: ExecClient, server: LiveServer) -> None:
    run = ex.start(argv=["python3", "-c", TICKER], timeout_s=90)
    rid = run["id"]
    secret = "v_short-lived-token-for-the-test"
    _plant(server, secret, 2.0)
    expires = time.monotonic() + 2.0
    watchers = [
        Watcher(server.url, f"/exec/runs/{rid}/events", token=secret),
        Watcher(server.url, "/exec/events", token=secret),
    ]
    try:
        for w in watchers:
            assert w.opened.wait(10)
            assert w.status == 200
        watchers[0].wait_for("stdout", 10)
        for w in watchers:
            _ended_within(w, expires, 2.0)
            last = w.events[-1][1]
            assert last.event == "revoked"
            assert json.loads(last.data)["reason"] == "expired"
        with ExecClient(server.url, secret) as late:
            assert late.http.get(f"/exec/runs/{rid}").status_code == 401
    finally:
        ex.http.post(f"/exec/runs/{rid}/terminate")
        for w in watchers:
            w.close()


def test_logging_out_ends_the_sessions_streams(ex: ExecClient, server: LiveServer, tmp_path: Path) -> None:
    run = ex.start(argv=["python3", "-c", TICKER], timeout_s=90)
    rid = run["id"]
    token = ex.http.post("/exec/tokens", json={"label": "guest", "run_id": rid}).json()["token"]
    with httpx.Client(base_url=server.url, headers={"Origin": server.url}) as page:
        assert page.post("/exec/login", json={"token": token}).status_code == 200
        watcher = Watcher(
            server.url, f"/exec/runs/{rid}/events", cookies={"exec_session": page.cookies["exec_session"]}
        )
        try:
            watcher.wait_for("stdout", 10)
            out_at = time.monotonic()
            assert page.post("/exec/logout").status_code == 200
            _ended_within(watcher, out_at, 2.0)
            assert json.loads(watcher.events[-1][1].data)["reason"] == "logged out"
        finally:
            ex.http.post(f"/exec/runs/{rid}/terminate")
            watcher.close()
