"""Issue 14.1: the login cookie names a server-side session: random per log-in, expiring, revoked by
log-out on every instance at once; and only a page session opened by the same login confirms.

Real uvicorn (and a real redis-server for two instances); the target is a ``sleep 60`` we spawn.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import BEARER, TOKEN, Page, Watcher, dashboard_server, logged_in, start_time
from tests.dashboard.host_helpers import instance, live
from tests.rig import LiveServer, RedisServer, wait_until

COOKIE = "dashboard_control"


def whoami(base: str, cookie: dict[str, str]) -> dict[str, Any]:
    r = httpx.get(base + "/dashboard/whoami", headers=cookie, timeout=10)
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


def command(base: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(base + "/dashboard/commands", json=body, headers=headers, timeout=20)


def secret_of(cookie: dict[str, str]) -> str:
    return cookie["Cookie"].split("=", 1)[1]


def ref_of(cookie: dict[str, str]) -> str:
    return hashlib.sha256(secret_of(cookie).encode()).hexdigest()[:12]


@pytest.fixture
def child(sleeper: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """The process the commands target (the conftest's ``sleeper``)."""
    return sleeper


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with dashboard_server(tmp_path_factory.mktemp("dash"), confirm_timeout=5) as s:
        yield s


def kill_body(proc: subprocess.Popen[bytes], client_id: str | None) -> dict[str, Any]:
    return {"action": "kill", "pid": proc.pid, "start_time": start_time(proc.pid), "client_id": client_id}


# -- sessions -------------------------------------------------------------------------------------


def test_two_browsers_get_different_sessions_and_logout_revokes_only_its_own(srv: LiveServer) -> None:
    a, b = logged_in(srv.url), logged_in(srv.url)
    assert secret_of(a) != secret_of(b), "each log-in is its own random session"
    assert TOKEN not in secret_of(a)
    assert whoami(srv.url, a)["can_control"]
    assert whoami(srv.url, b)["can_control"]

    r = httpx.post(srv.url + "/dashboard/logout", headers=a, timeout=10)
    assert r.status_code == 200
    assert whoami(srv.url, a) == {"can_control": False, "via": None}, "the old cookie is dead at once"
    r = command(srv.url, {"action": "pause_sampling"}, a)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/json")
    assert "login has ended" in r.json()["detail"]
    assert whoami(srv.url, b)["can_control"], "the other browser stays logged in"
    assert command(srv.url, {"action": "resume_sampling"}, b).status_code == 200


def test_a_new_login_revokes_the_cookie_the_browser_had(srv: LiveServer) -> None:
    """A cookie planted in (or copied from) a browser dies when that browser logs in."""
    with httpx.Client(base_url=srv.url, timeout=10) as browser:
        browser.post("/dashboard/login", json={"token": TOKEN}).raise_for_status()
        first = {"Cookie": f"{COOKIE}={browser.cookies[COOKIE]}"}
        browser.post("/dashboard/login", json={"token": TOKEN}).raise_for_status()
        assert browser.cookies[COOKIE] != secret_of(first)
        assert browser.get("/dashboard/whoami").json()["can_control"] is True
    assert whoami(srv.url, first)["can_control"] is False


def test_an_expired_login_is_refused(tmp_path: Path) -> None:
    with dashboard_server(tmp_path, login_max_age=1.5) as s:
        r = httpx.post(s.url + "/dashboard/login", json={"token": TOKEN}, timeout=10)
        assert r.status_code == 200
        assert "max-age=1" in r.headers["set-cookie"].lower(), "the browser drops it too"
        cookie = {"Cookie": f"{COOKIE}={r.cookies[COOKIE]}"}
        assert whoami(s.url, cookie)["can_control"] is True
        time.sleep(2.0)
        assert whoami(s.url, cookie)["can_control"] is False
        r = command(s.url, {"action": "pause_sampling"}, cookie)
        assert r.status_code == 401
        assert "expired" in r.json()["detail"]


def test_sessions_survive_a_restart_but_not_a_new_token(tmp_path: Path) -> None:
    with dashboard_server(tmp_path) as s:
        cookie = logged_in(s.url)
    with dashboard_server(tmp_path) as s:
        assert whoami(s.url, cookie)["can_control"] is True, "same data dir, same token: still logged in"
    with dashboard_server(tmp_path, control_token="another-control-token-42") as s:
        assert whoami(s.url, cookie)["can_control"] is False, "a new token ends every old session"
    files = [tmp_path / "dashboard-logins.sqlite3", tmp_path / "dashboard.sqlite3"]
    assert [oct(p.stat().st_mode & 0o777) for p in files] == ["0o600", "0o600"]


# -- who may confirm ---------------------------------------------------------------------------------


def test_a_cookie_cannot_confirm_its_own_command_from_a_page_session_it_opened_without_it(
    srv: LiveServer, child: subprocess.Popen[bytes]
) -> None:
    """The attack: with only the cookie, open an anonymous page session, name it as the confirming
    page, and answer its own ``confirm``. Refused before anyone is asked; the process lives."""
    cookie = logged_in(srv.url)
    anonymous = Page(srv.url, "yes")  # no cookie: what curl can open
    other_login = Page(srv.url, "yes", headers=logged_in(srv.url))  # another browser's page
    # (Both streams stay open until the module's server stops: they are never sent anything.)
    for page, why in ((anonymous, "was not opened by a login"), (other_login, "belongs to another login")):
        r = command(srv.url, kill_body(child, page.wait_ready()), cookie)
        assert r.status_code == 403, r.text
        detail = r.json()["detail"]
        assert why in detail
        assert "a confirmation is accepted only from a page session opened by the same login" in detail
        assert r.json()["extra"]["outcome"] == "refused"
        assert page.requests == [], "the page was never asked"
    # A Bearer client's command: any page, but only one opened by a logged-in browser.
    r = command(srv.url, kill_body(child, anonymous.client_id), BEARER)
    assert r.status_code == 403, r.text
    assert "opened by a logged-in browser" in r.json()["detail"]
    time.sleep(0.3)
    assert child.poll() is None, "the process was not killed"
    rows = httpx.get(srv.url + "/dashboard/audit", timeout=10).json()[:3]
    assert [(row["result"], row["asked_by"], row["confirmed_by"]) for row in rows] == [
        ("refused", "bearer", None),
        ("refused", f"login {ref_of(cookie)}", None),
        ("refused", f"login {ref_of(cookie)}", None),
    ]


def test_a_page_session_of_the_same_login_confirms_and_the_audit_names_both(
    srv: LiveServer, child: subprocess.Popen[bytes]
) -> None:
    cookie = logged_in(srv.url)
    page = Page(srv.url, "yes", headers=cookie)
    r = command(srv.url, {**kill_body(child, page.wait_ready()), "action": "terminate"}, cookie)
    assert r.status_code == 200, r.text
    assert child.wait(5) == -15
    assert [q["params"]["target"]["pid"] for q in page.requests] == [child.pid]
    row = httpx.get(srv.url + "/dashboard/audit", timeout=10).json()[0]
    ref = ref_of(cookie)
    assert (row["action"], row["result"]) == ("terminate", "succeeded")
    assert row["asked_by"] == f"login {ref}"
    assert row["confirmed_by"] == f"login {ref}, page {page.client_id}"
    assert row["who"].startswith(f"browser login {ref} from 127.0.0.1")
    assert secret_of(cookie) not in json.dumps(row), "the audit never holds the cookie"


def test_a_logout_while_the_question_is_open_voids_the_yes(srv: LiveServer, child: subprocess.Popen[bytes]) -> None:
    cookie = logged_in(srv.url)
    hello: dict[str, Any] = {}

    def on_event(sse: Any) -> bool:
        data = json.loads(sse.data)
        if sse.event == "session":
            hello.update(data)
        elif sse.event == "request":
            httpx.post(srv.url + "/dashboard/logout", headers=cookie, timeout=10).raise_for_status()
            reply = {"jsonrpc": "2.0", "id": data["id"], "result": {"confirmed": True}}
            auth = {**cookie, "Authorization": f"Bearer {hello['token']}"}
            httpx.post(srv.url + "/dashboard/session/respond", json=reply, headers=auth, timeout=10)
            return False
        return True

    watcher = Watcher(srv.url + "/dashboard/session/events", on_event=on_event, headers=cookie)
    try:
        wait_until(lambda: "client_id" in hello, what="the session event")
        r = command(srv.url, kill_body(child, hello["client_id"]), cookie)
        assert r.status_code == 403, r.text
        assert "login ended" in r.json()["detail"]
        assert child.poll() is None
    finally:
        watcher.stop()


# -- several instances ---------------------------------------------------------------------------------


@pytest.mark.redis
def test_on_two_instances_a_login_works_on_both_and_a_logout_ends_it_on_both(tmp_path: Path) -> None:
    with RedisServer().running() as redis, ExitStack() as stack:
        one = stack.enter_context(instance(redis, tmp_path / "one", "h1"))
        two = stack.enter_context(instance(redis, tmp_path / "two", "h1"))
        wait_until(lambda: live(one) == live(two) == {"h1"}, what="both instances")
        a, b = logged_in(one.url), logged_in(two.url)
        assert secret_of(a) != secret_of(b)
        for srv in (one, two):
            assert whoami(srv.url, a)["can_control"]
            assert whoami(srv.url, b)["can_control"]
        httpx.post(two.url + "/dashboard/logout", headers=a, timeout=10).raise_for_status()
        for srv in (one, two):  # no wait: nothing is cached per instance
            assert whoami(srv.url, a)["can_control"] is False
            r = command(srv.url, {"action": "pause_sampling"}, a)
            assert r.status_code == 401, r.text
            assert "login has ended" in r.json()["detail"]
            assert whoami(srv.url, b)["can_control"] is True
