"""Page sessions (``/bidi/`` and the dashboard's) are capped per client address first (issue 14.4).

The attack: one address opens session after session and drops each at once. A dropped session
stays for its grace period, outside the cap on open streams, so before the fix 10,000 of them
filled the server and every other browser got 429. Here, through real uvicorn with
``--proxy-headers`` (the client address comes from ``X-Forwarded-For``, as behind a proxy):
the flood costs its own address its own oldest sessions, and an address that holds nothing is
served even when the server's global cap is full.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import dashboard
from shared import Hub
from showcase import bidi
from tests.rig import LiveServer

PROXIED = {"proxy_headers": True, "forwarded_allow_ips": "127.0.0.1"}
ATTACKER = {"X-Forwarded-For": "203.0.113.7"}
NEWCOMER = {"X-Forwarded-For": "198.51.100.9"}


def open_and_drop(c: httpx.Client, path: str, client_id: str, headers: dict[str, str]) -> httpx.Response:
    """Open a session stream, read up to its ``session`` event, hang up (the session stays in grace)."""
    with c.stream("GET", path, params={"client_id": client_id}, headers=headers) as r:
        if r.status_code == 200:
            for line in r.iter_lines():
                if line.startswith("event: session"):
                    break
        else:
            r.read()
        return r


def assert_429(r: httpx.Response, limit_name: str, *words: str) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["extra"]["limit_name"] == limit_name, body
    assert int(r.headers["retry-after"]) >= 1
    for word in words:
        assert word in body["detail"], body["detail"]


def test_bidi_sessions_in_grace_count_per_client_address() -> None:
    with (
        LiveServer(lambda: bidi.create_app(Hub(), grace=30), config=PROXIED) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        for i in range(120):
            r = open_and_drop(c, "/bidi/events", f"flood-{i}", ATTACKER)
            assert r.status_code == 200, r.text  # the flood replaces its own oldest sessions
        kept = [s for s in c.get("/bidi/clients").json() if s["client_id"].startswith("flood-")]
        assert len(kept) == 32  # sessions in their grace period count: never more than the cap
        assert {f"flood-{i}" for i in range(100, 120)} <= {s["client_id"] for s in kept}  # the newest stay
        assert open_and_drop(c, "/bidi/events", "someone", NEWCOMER).status_code == 200


def test_bidi_a_client_with_all_its_sessions_connected_gets_429() -> None:
    def app() -> Any:
        return bidi.create_app(Hub(), grace=30, max_sessions_per_client=3)

    with LiveServer(app, config=PROXIED) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        streams = [
            c.stream("GET", "/bidi/events", params={"client_id": f"tab-{i}"}, headers=ATTACKER) for i in range(3)
        ]
        opened = [s.__enter__() for s in streams]
        try:
            assert [r.status_code for r in opened] == [200, 200, 200]
            r = c.get("/bidi/events", params={"client_id": "tab-3"}, headers=ATTACKER)
            assert_429(r, "max_sessions_per_client", "from 203.0.113.7", "the limit is 3 per client address")
            assert open_and_drop(c, "/bidi/events", "other", NEWCOMER).status_code == 200
        finally:
            for s in streams:
                s.__exit__(None, None, None)


def _bidi_full() -> Any:
    return bidi.create_app(Hub(), grace=30, max_sessions=20)


def _dashboard_full(tmp: Path) -> Callable[[], Any]:
    return lambda: dashboard.create_app(
        tmp, control_token="caps-test-control-token-0123456789", rules=[], max_sessions=20, session_grace=30
    )


@pytest.mark.parametrize("app", ["bidi", "dashboard"])
def test_a_full_server_still_serves_an_address_that_holds_nothing(app: str, tmp_path: Path) -> None:
    factory = _bidi_full if app == "bidi" else _dashboard_full(tmp_path)
    path = "/bidi/events" if app == "bidi" else "/dashboard/session/events"
    with LiveServer(factory, config=PROXIED) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        for i in range(20):
            assert open_and_drop(c, path, f"flood-{i}", ATTACKER).status_code == 200
        # The server holds 20 sessions, all the flood's: the flood gets no more...
        assert_429(open_and_drop(c, path, "flood-20", ATTACKER), "max_sessions", "too many client sessions (20)")
        # ...but every address that holds less than the biggest holder is still served.
        for n in range(5):
            fresh = {"X-Forwarded-For": f"198.51.100.{n + 1}"}
            assert open_and_drop(c, path, f"browser-{n}", fresh).status_code == 200
