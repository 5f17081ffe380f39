"""Every configurable cap, hit, answered with its documented 4xx.

Caps that already have a test elsewhere are not tested twice; this is where each one is shown:

- chat rooms (``ChatSettings.max_rooms``, 409):
  ``tests/chat/test_api.py::test_creating_rooms_and_their_limits``
- chat writes per person (``ChatSettings.rate``/``burst``, 429 + Retry-After):
  ``tests/chat/test_api.py::test_rate_limit_answers_429_with_retry_after``
- chat upload size (``ChatSettings.max_file_bytes``, 413): the default in
  ``tests/chat/test_api.py::test_uploads_over_10_mib_are_413``, a set value here
- exec concurrent runs (policy ``runs.max_concurrent``, 429):
  ``tests/remote_exec/test_runs.py::test_concurrency_cap_is_429``
- exec output per run (policy ``runs.max_output_bytes``; no error: a ``truncated`` event, the
  rest read and dropped): ``tests/remote_exec/test_runs.py::test_output_is_capped_with_a_marker``
- streams per client address (``HubSettings.max_streams_per_client``, 429 + Retry-After): basics
  and bidi in ``tests/shared/test_limits.py``; chat, dashboard and exec (run streams too) here
- pending requests per client (``Correlator.max_pending_per_client``, 429 from ``/bidi/trigger``): here
- sessions (``Correlator.max_sessions``, 429 + Retry-After):
  ``tests/shared/test_correlation.py::test_sessions_are_capped``; through the dashboard's HTTP API here
- sessions per client address (``Correlator.max_sessions_per_client``; in grace too) and a full
  server serving an address that holds nothing: ``tests/system/test_session_caps.py``
- chat caps per client address (joins, writes, read markers, new rooms, rooms held, room
  members) on both stores: ``tests/chat/test_client_caps.py``
- dashboard wrong log-ins (``create_app(max_login_failures=)``, 429 + Retry-After): here
  (``ControlAuth`` alone: ``tests/dashboard/test_auth.py``)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse
from litestar import Litestar
from litestar.testing import TestClient

import chat
import dashboard
import remote_exec
from shared import Hub, HubSettings
from showcase import bidi
from tests.remote_exec.helpers import TOKEN as EXEC_TOKEN
from tests.remote_exec.helpers import make_policy
from tests.rig import LiveServer, wait_until

MIB = 1024 * 1024
TWO_STREAMS = HubSettings(max_streams_per_client=2, limit_loopback=True)
DASH_TOKEN = "caps-test-control-token-0123456789"


def assert_refused(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """The shared error shape, with a detail that names the limit."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert body["status_code"] == status
    for word in words:
        assert word in body["detail"], body["detail"]
    return body


# -- chat: the upload cap is a setting -----------------------------------------------------------


def test_chat_upload_cap_follows_the_setting(tmp_path: Path) -> None:
    app = chat.create_app(tmp_path, settings=chat.ChatSettings(max_file_bytes=1 * MIB))
    with TestClient(app) as c:
        assert c.post("/chat/session", json={"name": "ada"}).status_code == 200

        def upload(size: int, cmid: str) -> httpx.Response:
            return c.post(
                "/chat/rooms/general/files",
                params={"name": "f.bin", "client_msg_id": cmid},
                content=b"\x00" * size,
                headers={"Content-Type": "application/octet-stream"},
            )

        assert upload(1 * MIB, "fits").status_code == 201
        assert_refused(upload(1 * MIB + 1, "over"), 413, "file too large", "the limit is 1 MiB (1048576 bytes)")
        assert not any(m["client_msg_id"] == "over" for m in c.get("/chat/rooms/general/messages").json()["messages"])


# -- streams per client: every app's streams count -------------------------------------------------


@contextlib.contextmanager
def open_streams(client: httpx.Client, paths: list[str]) -> Iterator[list[httpx.Response]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(client.stream("GET", path)) for path in paths]


def _chat(tmp: Path) -> tuple[Litestar, dict[str, str], list[str]]:
    app = chat.create_app(tmp, hub_settings=TWO_STREAMS)
    return app, {}, ["/chat/rooms/general/events", "/chat/events", "/chat/rooms/random/events"]


def _dashboard(tmp: Path) -> tuple[Litestar, dict[str, str], list[str]]:
    app = dashboard.create_app(tmp, control_token=DASH_TOKEN, rules=[], hub_settings=TWO_STREAMS)
    return app, {}, ["/dashboard/events", "/dashboard/session/events", "/dashboard/events"]


def _exec(tmp: Path) -> tuple[Litestar, dict[str, str], list[str]]:
    work = tmp / "work"
    work.mkdir()
    app = remote_exec.create_app(tmp / "data", token=EXEC_TOKEN, policy=make_policy(work), hub_settings=TWO_STREAMS)
    # The run list and a run's output both count: RUN is replaced by a running run's id.
    return app, {"Authorization": f"Bearer {EXEC_TOKEN}"}, ["/exec/events", "/exec/runs/RUN/events", "/exec/events"]


@pytest.mark.parametrize("make", [_chat, _dashboard, _exec], ids=["chat", "dashboard", "exec"])
def test_every_apps_streams_count_against_the_per_client_cap(make: Any, tmp_path: Path) -> None:
    app, headers, paths = make(tmp_path)
    with LiveServer(lambda: app) as srv, httpx.Client(base_url=srv.url, headers=headers, timeout=10) as c:
        run_id = None
        if paths[1].startswith("/exec/"):
            run_id = c.post("/exec/runs", json={"argv": ["sleep", "30"]}).json()["id"]
            paths = [p.replace("RUN", run_id) for p in paths]
        if paths[0].startswith("/chat/"):
            assert c.post("/chat/session", json={"name": "ada"}).status_code == 200
        try:
            with open_streams(c, paths[:2]) as opened:
                assert [r.status_code for r in opened] == [200, 200]
                refused = c.get(paths[2])
                body = assert_refused(refused, 429, "too many open event streams", "the limit is 2")
                assert refused.headers["retry-after"] == "5"
                assert body["extra"] == {"limit": 2, "limit_name": "max_streams_per_client"}

            def opens() -> bool:
                with c.stream("GET", paths[2]) as again:
                    return again.status_code == 200

            wait_until(opens, what="closing streams to free their places")  # released as they end
        finally:
            if run_id is not None:
                c.post(f"/exec/runs/{run_id}/terminate")
                wait_until(lambda: c.get(f"/exec/runs/{run_id}").json()["status"] != "running", what="run ends")


# -- bidi: pending requests per client -------------------------------------------------------------


def _bidi_with_two_pending() -> Litestar:
    return bidi.create_app(Hub(), max_pending_per_client=2)


async def _next(events: Any, name: str) -> ServerSentEvent:
    async for ev in events:
        if ev.event == name:
            return ev  # type: ignore[no-any-return]
    raise AssertionError(f"the stream ended before a {name!r} event")


async def test_bidi_pending_requests_per_client_are_capped() -> None:
    with LiveServer(_bidi_with_two_pending) as srv:
        async with (
            httpx.AsyncClient(base_url=srv.url, timeout=20) as c,
            aconnect_sse(c, "GET", "/bidi/events", params={"client_id": "busy"}) as source,
        ):
            events = source.aiter_sse()
            token = json.loads((await _next(events, "session")).data)["token"]

            def trigger(n: int) -> Any:
                body = {"client_id": "busy", "params": {"n": n}, "timeout_s": 15}
                return asyncio.ensure_future(c.post("/bidi/trigger", json=body))

            waiting = [trigger(1), trigger(2)]
            asked = [json.loads((await _next(events, "request")).data) for _ in range(2)]
            # Two are pending (sent, unanswered): a third is refused at once.
            refused = await c.post("/bidi/trigger", json={"client_id": "busy", "timeout_s": 15})
            assert_refused(refused, 429, "already has 2 pending requests")
            assert refused.headers["retry-after"] == "1"
            other = await c.post("/bidi/trigger", json={"client_id": "nobody"})
            assert other.status_code == 404  # the cap is per client, not global
            auth = {"Authorization": f"Bearer {token}"}
            for req in asked:
                answer = {"jsonrpc": "2.0", "id": req["id"], "result": {"echo": req["params"]["n"]}}
                assert (await c.post("/bidi/respond", json=answer, headers=auth)).status_code == 200
            done = await asyncio.gather(*waiting)
            assert sorted(r.json()["result"]["echo"] for r in done) == [1, 2]
            # Answered requests free their places.
            third = trigger(3)
            req = json.loads((await _next(events, "request")).data)
            answer = {"jsonrpc": "2.0", "id": req["id"], "result": "ok"}
            assert (await c.post("/bidi/respond", json=answer, headers=auth)).status_code == 200
            assert (await third).status_code == 200


# -- dashboard: sessions and wrong log-ins ---------------------------------------------------------


def test_dashboard_session_cap_is_429_with_retry_after(tmp_path: Path) -> None:
    app = dashboard.create_app(tmp_path, control_token=DASH_TOKEN, rules=[], max_sessions=2, session_grace=7)
    with LiveServer(lambda: app) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        path = "/dashboard/session/events"
        with open_streams(c, [f"{path}?client_id=page-1", f"{path}?client_id=page-2"]) as opened:
            assert [r.status_code for r in opened] == [200, 200]
            refused = c.get(path, params={"client_id": "page-3"})
            assert_refused(refused, 429, "too many client sessions (2)")
            assert refused.headers["retry-after"] == "7"  # a session is kept for the grace period


def test_dashboard_wrong_logins_are_capped(tmp_path: Path) -> None:
    app = dashboard.create_app(tmp_path, control_token=DASH_TOKEN, rules=[], max_login_failures=3)
    with TestClient(app) as c:
        for _ in range(3):
            assert c.post("/dashboard/login", json={"token": "a-wrong-guess"}).status_code == 401
        refused = c.post("/dashboard/login", json={"token": DASH_TOKEN})  # even the right one, for a while
        assert_refused(refused, 429, "too many wrong tokens")
        assert refused.headers["retry-after"] == "60"
