"""Caps that one client cannot use up for everyone (issue 14.4), through real uvicorn.

A "client" is a remote address (here from ``X-Forwarded-For``, the server run with
``--proxy-headers`` as behind a reverse proxy) and, where there is one, its session cookie.
Each attack from the issue is tried from one address with as many throwaway sessions as it
likes; each is refused with a 429/409 JSON error naming the rule, and a fresh address that
holds nothing is still served. With Redis, the limits hold across two instances.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat import ChatSettings, create_app
from chat.session import COOKIE
from tests.rig import LiveServer, RedisServer

PROXIED = {"proxy_headers": True, "forwarded_allow_ips": "127.0.0.1"}
ATTACKER = "203.0.113.7"


def refused(r: httpx.Response, status: int, limit_name: str, *words: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert body["status_code"] == status
    assert body.get("extra", {}).get("limit_name") == limit_name, body
    for word in words:
        assert word in body["detail"], body["detail"]
    return body


class Client:
    """One browser-like client: an address (X-Forwarded-For) and at most one cookie."""

    def __init__(self, http: httpx.Client, address: str) -> None:
        self.http = http
        self.address = address
        self.cookie: str | None = None

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-Forwarded-For": self.address, **(kwargs.pop("headers", None) or {})}
        if self.cookie is not None:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
        try:
            return self.http.request(method, url, headers=headers, **kwargs)
        finally:
            self.http.cookies.clear()

    def join(self, name: str) -> httpx.Response:
        r = self.request("POST", "/chat/session", json={"name": name})
        if r.status_code == 200:
            self.cookie = r.cookies[COOKIE]
        return r

    def send(self, room: str, text: str, cmid: str) -> httpx.Response:
        return self.request("POST", f"/chat/rooms/{room}/messages", json={"text": text, "client_msg_id": cmid})


@contextlib.contextmanager
def chat_servers(
    tmp_path: Path, settings: ChatSettings, redis_url: str | None = None, n: int = 1
) -> Iterator[list[str]]:
    servers: list[LiveServer] = []
    try:
        for i in range(n):
            d = tmp_path / f"i{i}"
            factory = lambda d=d: create_app(d, settings=settings, backend_url=redis_url)  # noqa: E731
            servers.append(LiveServer(factory, config=PROXIED).start())
        yield [s.url for s in servers]
    finally:
        for s in servers:
            if s.thread is not None and s.thread.is_alive():
                s.stop()


@contextlib.contextmanager
def store(kind: str, tmp_path: Path, settings: ChatSettings) -> Iterator[list[httpx.Client]]:
    """One SQLite instance, or two instances on one Redis (clients alternate between them)."""
    with contextlib.ExitStack() as stack:
        url = None
        if kind == "redis":
            url = stack.enter_context(RedisServer().running()).url
        urls = stack.enter_context(chat_servers(tmp_path, settings, url, n=2 if kind == "redis" else 1))
        yield [stack.enter_context(httpx.Client(base_url=u, timeout=10)) for u in urls]


STORES = ["sqlite", "redis"]


@pytest.mark.parametrize("kind", STORES)
def test_joining_is_rate_limited_per_address(kind: str, tmp_path: Path) -> None:
    with store(kind, tmp_path, ChatSettings()) as https:
        codes = [Client(https[i % len(https)], ATTACKER).join(f"throwaway{i}") for i in range(30)]
        assert [r.status_code for r in codes[:10]] == [200] * 10  # a burst of 10
        over = [r for r in codes[10:] if r.status_code != 200]
        assert len(over) >= 18, [r.status_code for r in codes]  # then one every 5 s, on every instance
        body = refused(over[0], 429, "join_rate", "joins per client address", "one every 5 s, bursts of 10")
        assert body["detail"].endswith(" s")
        assert int(over[0].headers["retry-after"]) >= 1
        # An address that holds nothing joins at once.
        assert Client(https[-1], "198.51.100.9").join("newcomer").status_code == 200


@pytest.mark.parametrize("kind", STORES)
def test_many_sessions_of_one_address_share_one_write_rate(kind: str, tmp_path: Path) -> None:
    """Joining was free and the write limit per cookie, so 2,500 messages went out in 8 s."""
    with store(kind, tmp_path, ChatSettings()) as https:
        senders = [Client(https[i % len(https)], ATTACKER) for i in range(10)]
        for i, s in enumerate(senders):
            assert s.join(f"spam{i}").status_code == 200
        began = time.monotonic()
        results = [senders[i % 10].send("general", f"spam {i}", f"s{i}") for i in range(200)]
        elapsed = time.monotonic() - began
        ok = sum(r.status_code == 201 for r in results)
        # A burst of 40 and 20 a second from the address, however many sessions it spreads them over.
        assert ok <= 40 + 20 * elapsed + 5, (ok, elapsed)
        limited = [r for r in results if r.status_code == 429]
        assert limited
        refused(limited[-1], 429, "address_rate", "writes per client address", "20 a second, bursts of 40")
        someone = Client(https[0], "198.51.100.9")
        assert someone.join("someone").status_code == 200
        assert someone.send("general", "hello", "h1").status_code == 201


@pytest.mark.parametrize("kind", STORES)
def test_read_markers_are_rate_limited(kind: str, tmp_path: Path) -> None:
    """``POST /chat/rooms/{room}/read`` was not limited: 1,000 fsynced writes in 1.6 s."""
    with store(kind, tmp_path, ChatSettings()) as https:
        me = Client(https[0], ATTACKER)
        assert me.join("reader").status_code == 200
        mid = me.send("general", "hi", "m1").json()["id"]
        codes = [me.request("POST", "/chat/rooms/general/read", json={"id": mid}).status_code for _ in range(60)]
        assert codes.count(204) <= 19 + 10, codes  # the person's burst (one token went to the send)
        assert 429 in codes
        r = me.request("POST", "/chat/rooms/general/read", json={"id": mid})
        refused(r, 429, "rate", "writes per person")
        other = Client(https[0], "198.51.100.9")
        assert other.join("other").status_code == 200
        assert other.request("POST", "/chat/rooms/general/read", json={"id": mid}).status_code == 204
