"""The chat's own error answers (a broken rule: 422; its Redis away: 503) go out as every other
error does (shared.errors): the JSON shape, and the security headers (CSP, nosniff...) that an
app's ``response_headers`` never put on an exception's response."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from chat import create_app
from chat.session import COOKIE
from shared.security import SECURITY_HEADERS
from tests.rig import LiveServer, RedisServer


def assert_shared_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, f"{status}: {name} missing or changed"
    body: dict[str, Any] = r.json()
    assert body["status_code"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


def join(base: str, name: str) -> str:
    r = httpx.post(base + "/chat/session", json={"name": name}, timeout=10)
    r.raise_for_status()
    return r.cookies[COOKIE]


def test_a_broken_rule_is_a_422_with_the_security_headers(tmp_path: Path) -> None:
    with LiveServer(lambda: create_app(tmp_path, secret=b"k" * 32)) as srv:
        cookie = join(srv.url, "alice")
        r = httpx.post(
            srv.url + "/chat/rooms/general/messages",
            json={"text": "x" * 4001, "client_msg_id": "c1"},
            headers={"Cookie": f"{COOKIE}={cookie}"},
            timeout=10,
        )
    assert "at most 4000 characters" in assert_shared_error(r, 422)["detail"]


@pytest.mark.redis
def test_redis_away_is_a_503_with_the_security_headers(tmp_path: Path) -> None:
    redis = RedisServer().start()
    try:
        with LiveServer(lambda: create_app(tmp_path, backend=redis.url)) as srv:
            cookie = join(srv.url, "alice")
            redis.kill()
            r = httpx.get(srv.url + "/chat/rooms", headers={"Cookie": f"{COOKIE}={cookie}"}, timeout=10)
            body = assert_shared_error(r, 503)
            assert r.headers["Retry-After"] == "1"
            assert "unavailable" in body["detail"]
    finally:
        redis.stop()
