"""Caps that one client cannot use up for everyone (issue 14.4), through real uvicorn.

A "client" is a remote address (here from ``X-Forwarded-For``, the server run with
``--proxy-headers`` as behind a reverse proxy) and, where there is one, its session cookie.
Each attack from the issue is tried from one address with as many throwaway sessions as it
likes; each is refused with a 429/409 JSON error naming the rule, and a fresh address that
holds nothing is still served. With Redis, the limits hold across two instances.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat import ChatSettings, create_app
from chat.session import COOKIE
from tests.rig import LiveServer, RedisServer, read_events, wait_until

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
            factory = lambda d=d: create_app(d, settings=settings, backend=redis_url)  # noqa: E731
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


# -- rooms: a share per client, deletion by the creator, expiry --------------------------------------


def room_names(c: Client) -> list[str]:
    r = c.request("GET", "/chat/rooms")
    assert r.status_code == 200, r.text
    return [room["name"] for room in r.json()["rooms"]]


@pytest.mark.parametrize("kind", STORES)
def test_throwaway_sessions_cannot_take_every_room_slot(kind: str, tmp_path: Path) -> None:
    """8 throwaway sessions took all 100 room slots in 0.5 s, and no room could be deleted."""
    settings = ChatSettings(max_rooms=14, room_burst=50)  # 2 default rooms + 12
    with store(kind, tmp_path, settings) as https:
        made: list[str] = []
        last = None
        for i in range(8):
            s = Client(https[i % len(https)], ATTACKER)
            assert s.join(f"squatter{i}").status_code == 200
            for j in range(3):
                last = s.request("POST", "/chat/rooms", json={"name": f"squat-{i}-{j}"})
                if last.status_code == 201:
                    made.append(f"squat-{i}-{j}")
        assert len(made) == 10  # the address's share
        assert last is not None
        refused(last, 409, "max_rooms_per_address", "rooms were made from your address", "10 per client address")
        # A second address fills the two slots left.
        other = Client(https[0], "203.0.113.8")
        assert other.join("other").status_code == 200
        for j in range(2):
            assert other.request("POST", "/chat/rooms", json={"name": f"other-{j}"}).status_code == 201
        refused(other.request("POST", "/chat/rooms", json={"name": "other-2"}), 409, "max_rooms", "already 14 rooms")
        # Full; a client that holds no room still gets one: an empty room of the biggest holder goes.
        newcomer = Client(https[-1], "198.51.100.9")
        assert newcomer.join("newcomer").status_code == 200
        r = newcomer.request("POST", "/chat/rooms", json={"name": "real-work"})
        assert r.status_code == 201, r.text
        rooms = room_names(newcomer)
        assert len(rooms) == 14
        assert "real-work" in rooms
        assert "squat-0-0" not in rooms  # the attacker's, idle longest
        assert {"general", "random", "other-0", "other-1"} <= set(rooms)


@pytest.mark.parametrize("kind", STORES)
def test_room_creation_is_rate_limited_per_address(kind: str, tmp_path: Path) -> None:
    with store(kind, tmp_path, ChatSettings()) as https:
        codes = []
        for i in range(3):
            s = Client(https[i % len(https)], ATTACKER)
            assert s.join(f"maker{i}").status_code == 200
            codes += [s.request("POST", "/chat/rooms", json={"name": f"r-{i}-{j}"}) for j in range(2)]
        assert [r.status_code for r in codes[:5]] == [201] * 5
        refused(codes[5], 429, "room_rate", "new rooms per person and per client address", "one every 60 s")


@pytest.mark.parametrize("kind", STORES)
def test_the_creator_deletes_an_empty_room_and_every_page_hears_of_it(kind: str, tmp_path: Path) -> None:
    with store(kind, tmp_path, ChatSettings(presence_grace=0.2)) as https:
        ada, bob = Client(https[0], "198.51.100.1"), Client(https[-1], "198.51.100.2")
        assert ada.join("ada").status_code == 200
        assert bob.join("bob").status_code == 200
        room = ada.request("POST", "/chat/rooms", json={"name": "scratch"})
        assert room.status_code == 201
        assert room.json()["created_by_id"] == ada.request("GET", "/chat/session").json()["id"]
        lobby_from = bob.request("GET", "/chat/rooms").json()["latest_event_id"]

        r = bob.request("DELETE", "/chat/rooms/scratch")
        assert r.status_code == 403
        assert "only the person who created" in r.json()["detail"]
        r = ada.request("DELETE", "/chat/rooms/general")
        assert r.status_code == 403
        assert "default rooms" in r.json()["detail"]
        mid = ada.send("scratch", "draft", "d1").json()["id"]
        r = ada.request("DELETE", "/chat/rooms/scratch")
        assert r.status_code == 409
        assert "has 1 messages" in r.json()["detail"]
        assert ada.request("DELETE", f"/chat/rooms/scratch/messages/{mid}").status_code == 204
        # Someone is in it: not empty either.
        with bob.http.stream(
            "GET", "/chat/rooms/scratch/events", headers={"Cookie": f"{COOKIE}={bob.cookie}"}
        ) as stream:
            assert stream.status_code == 200
            next(stream.iter_lines())
            r = ada.request("DELETE", "/chat/rooms/scratch")
            assert r.status_code == 409
            assert "1 other people in it" in r.json()["detail"]
        time.sleep(0.6)  # bob's grace period ends
        assert ada.request("DELETE", "/chat/rooms/scratch").status_code == 204
        assert "scratch" not in room_names(bob)
        assert ada.request("DELETE", "/chat/rooms/scratch").status_code == 404
        # Bob's page (on the other instance with Redis) hears of it from the lobby stream.
        headers = {"Cookie": f"{COOKIE}={bob.cookie}", "Last-Event-ID": lobby_from}
        events = read_events(f"{bob.http.base_url}/chat/events", n=1, headers=headers)
        assert events[0].event == "room_deleted"
        assert json.loads(events[0].data) == {"name": "scratch", "reason": "deleted"}
        # The name is free again.
        assert bob.request("POST", "/chat/rooms", json={"name": "scratch"}).status_code == 201


@pytest.mark.parametrize("kind", STORES)
def test_empty_rooms_expire_when_unused(kind: str, tmp_path: Path) -> None:
    settings = ChatSettings(empty_room_ttl=1.0, room_sweep_interval=0.3)
    with store(kind, tmp_path, settings) as https:
        ada = Client(https[0], "198.51.100.1")
        assert ada.join("ada").status_code == 200
        assert ada.request("POST", "/chat/rooms", json={"name": "forgotten"}).status_code == 201
        assert ada.request("POST", "/chat/rooms", json={"name": "used"}).status_code == 201
        assert ada.send("used", "kept", "k1").status_code == 201
        wait_until(lambda: "forgotten" not in room_names(ada), timeout=10, what="the unused room to expire")
        assert {"general", "random", "used"} <= set(room_names(ada))


def test_a_database_from_before_room_creators_is_migrated(tmp_path: Path) -> None:
    """Schema 1 had no creator columns: they are added, old rooms count as nobody's."""
    import re
    import sqlite3

    from chat.db import SCHEMA

    v1_rooms = "CREATE TABLE rooms (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_by TEXT NOT NULL, "
    v1_rooms += "created_at REAL NOT NULL)"
    old = re.sub(r"CREATE TABLE rooms \(.*?\n\);", v1_rooms + ";", SCHEMA, flags=re.S)
    assert "creator_id" not in old
    d = tmp_path / "i0"
    d.mkdir()
    conn = sqlite3.connect(d / "chat.sqlite3")
    for statement in old.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('db_id', 'oldfile1')")
    conn.execute("INSERT INTO rooms (name, created_by, created_at) VALUES ('legacy', 'someone', 0)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with chat_servers(tmp_path, ChatSettings()) as urls, httpx.Client(base_url=urls[0], timeout=10) as http:
        ada = Client(http, "198.51.100.1")
        assert ada.join("ada").status_code == 200
        assert "legacy" in room_names(ada)
        r = ada.request("DELETE", "/chat/rooms/legacy")
        assert r.status_code == 403  # made before creators were kept: nobody may delete it
        assert ada.request("POST", "/chat/rooms", json={"name": "fresh"}).status_code == 201


# -- room members: a share per address, and a way in for a newcomer ---------------------------------


def visit(c: Client, room: str) -> httpx.Response:
    """Open the room's stream, read its ``presence`` snapshot, hang up (a member in grace now)."""
    headers = {"X-Forwarded-For": c.address, "Cookie": f"{COOKIE}={c.cookie}"}
    try:
        with c.http.stream("GET", f"/chat/rooms/{room}/events", headers=headers) as r:
            if r.status_code == 200:
                for line in r.iter_lines():
                    if line.startswith("event: presence"):
                        break
            else:
                r.read()
            return r
    finally:
        c.http.cookies.clear()


def members(c: Client, room: str) -> list[str]:
    headers = {"X-Forwarded-For": c.address, "Cookie": f"{COOKIE}={c.cookie}"}
    with c.http.stream("GET", f"/chat/rooms/{room}/events", headers=headers) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                c.http.cookies.clear()
                return sorted(m["name"] for m in json.loads(line[5:])["members"])
    raise AssertionError("no presence snapshot")


@pytest.mark.parametrize("kind", STORES)
def test_one_address_cannot_fill_a_room_with_fake_members(kind: str, tmp_path: Path) -> None:
    """A room filled with 2,000 fake members (a join each) turned the next real user away (409)."""
    settings = ChatSettings(presence_grace=30, max_room_members=6, max_room_members_per_address=3)
    with store(kind, tmp_path, settings) as https:
        fakes = [Client(https[i % len(https)], ATTACKER) for i in range(5)]
        for i, f in enumerate(fakes):
            assert f.join(f"fake{i}").status_code == 200
        codes = [visit(f, "general") for f in fakes]
        assert [r.status_code for r in codes[:3]] == [200, 200, 200]
        refused(codes[3], 409, "max_room_members_per_address", f"from your address {ATTACKER}", "3 per client")
        # Two more addresses fill the room (3 + 2 + 1 = 6).
        for n, address in enumerate(["203.0.113.8", "203.0.113.8", "203.0.113.9"]):
            other = Client(https[n % len(https)], address)
            assert other.join(f"other{n}").status_code == 200
            assert visit(other, "general").status_code == 200
        late = Client(https[0], "203.0.113.9")
        assert late.join("late").status_code == 200
        refused(visit(late, "general"), 409, "max_room_members", "is full: 6 people")
        # A client with nobody in the room still gets in: one of the biggest holder's people who
        # are only in their grace period here makes way.
        real = Client(https[0], "198.51.100.9")
        assert real.join("real").status_code == 200
        assert visit(real, "general").status_code == 200
        inside = members(real, "general")
        assert "real" in inside
        assert len(inside) == 6
        assert sum(name.startswith("fake") for name in inside) == 2
