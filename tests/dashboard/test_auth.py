"""The control token: generated when not given, never the cookie itself, log-ins rate limited."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from litestar.exceptions import ClientException, NotAuthorizedException

from dashboard.auth import ControlAuth
from dashboard.sessions import SqliteSessions
from tests.dashboard.conftest import TOKEN, dashboard_server


def test_generated_token_and_short_tokens(tmp_path: Path) -> None:
    store = SqliteSessions(tmp_path / "logins.sqlite3")
    auth = ControlAuth(sessions=store)
    assert auth.generated
    assert len(auth.token) >= 32
    assert ControlAuth(sessions=store).token != auth.token
    with pytest.raises(ValueError, match="at least 8"):
        ControlAuth("short", sessions=store)


async def test_login_cookie_is_not_the_token(tmp_path: Path) -> None:
    store = SqliteSessions(tmp_path / "logins.sqlite3")
    await store.start()
    try:
        auth = ControlAuth("a-long-enough-token", sessions=store)
        cookie = await auth.login("a-long-enough-token", secure=False)
        assert cookie.httponly
        assert cookie.samesite == "strict"
        assert cookie.path == "/"  # the whole origin: the shared connection (/sse/mux) carries it
        assert cookie.max_age == 12 * 3600
        assert cookie.value
        assert cookie.value != auth.token
        again = await ControlAuth("a-long-enough-token", sessions=store).login("a-long-enough-token", secure=True)
        assert again.value != cookie.value, "every log-in is a new session"
    finally:
        await store.close()


async def test_wrong_logins_are_rate_limited(tmp_path: Path) -> None:
    store = SqliteSessions(tmp_path / "logins.sqlite3")
    await store.start()
    try:
        auth = ControlAuth("a-long-enough-token", sessions=store, max_failures=3)
        for _ in range(3):
            with pytest.raises(NotAuthorizedException):
                await auth.login("guess-guess", secure=False)
        with pytest.raises(ClientException) as info:
            await auth.login("a-long-enough-token", secure=False)  # even the right one, for a while
        assert info.value.status_code == 429
    finally:
        await store.close()


def test_a_wrong_login_flood_from_one_address_does_not_lock_out_another(tmp_path: Path) -> None:
    """Issue 14.12: over HTTP, from two loopback addresses (127.0.0.2 floods, 127.0.0.1 logs in)."""
    with dashboard_server(tmp_path, max_login_failures=10) as srv:
        attacker = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)
        operator = httpx.Client(timeout=10)
        with attacker, operator:
            url = srv.url + "/dashboard/login"
            for _ in range(10):
                assert attacker.post(url, json={"token": "guess-guess"}).status_code == 401
            r = operator.post(url, json={"token": TOKEN})
            assert r.status_code == 200, r.text
            assert r.json()["can_control"] is True
            r = attacker.post(url, json={"token": TOKEN})
            assert r.status_code == 429, r.text
            assert "throttled per client address" in r.json()["detail"]
            assert 1 <= int(r.headers["retry-after"]) <= 60


@pytest.mark.parametrize("flag", ["--login-hours", "--login-idle-hours"])
def test_login_lifetime_flags_are_checked(flag: str) -> None:
    """A bad lifetime is one line naming the flag and its range, exit 2 (not a traceback)."""
    import subprocess
    import sys

    for value in ("0", "inf", "-1"):
        done = subprocess.run(
            [sys.executable, "-m", "dashboard", flag, value], capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 2, done.stderr
        assert f"{flag} must be more than 0 and at most 8760" in done.stderr
        assert "Traceback" not in done.stderr
