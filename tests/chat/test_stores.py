"""One contract, both stores: the chat's API behaves the same on SQLite and on Redis.

``test_api.py`` covers the SQLite store in depth; these run the core of it on both, in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from chat import ChatSettings, create_app
from chat.session import COOKIE
from tests.rig import RedisServer

from .conftest import Person

OCTETS = {"Content-Type": "application/octet-stream"}

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture(
    params=[pytest.param("sqlite", id="sqlite"), pytest.param("redis", id="redis", marks=pytest.mark.redis)]
)
def store(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The backend URL of each store: ``None`` (SQLite) or a fresh redis-server's."""
    if request.param == "sqlite":
        yield None
        return
    with RedisServer().running() as redis:
        yield redis.url


def client_for(store: str | None, tmp_path: Path, **settings: Any) -> TestClient[Any]:
    return TestClient(create_app(tmp_path, settings=ChatSettings(**settings), backend=store))


@pytest.fixture
def client(store: str | None, tmp_path: Path) -> Iterator[TestClient[Any]]:
    with client_for(store, tmp_path) as c:
        yield c


def history(person: Person, room: str = "general", **params: Any) -> dict[str, Any]:
    r = person.get(f"/chat/rooms/{room}/messages", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_sends_are_idempotent_and_rules_hold(client: TestClient[Any]) -> None:
    alice = Person(client, "alice")
    first = alice.send("general", "  hello @bob  ", "c1")
    assert first.status_code == 201
    msg = first.json()
    assert (msg["text"], msg["author"], msg["mentions"], msg["version"]) == ("hello @bob", "alice", ["bob"], 1)
    again = alice.send("general", "hello @bob", "c1")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == msg
    assert history(alice)["messages"] == [msg]
    assert alice.send("random", "hello", "c1").status_code == 409  # the same id in another room
    assert alice.send("general", " ", "c2").status_code == 422
    assert alice.send("nowhere", "hi", "c3").status_code == 404
    assert Person(client, "bob").send("general", "from bob", "c1").json()["id"] != msg["id"]  # ids are per person


def test_names_are_unique_among_people_online(client: TestClient[Any]) -> None:
    alice = Person(client, "alice")
    assert client.post("/chat/session", json={"name": "ALICE"}).status_code == 409
    client.cookies.clear()
    renamed = alice.post("/chat/session", json={"name": "alice2"})
    assert renamed.json()["id"] == alice.id  # a rename frees it
    alice.cookie = renamed.cookies[COOKIE]  # and rotates the cookie (the old one is revoked)
    client.cookies.clear()
    assert Person(client, "alice").id != alice.id
    assert alice.request("DELETE", "/chat/session").status_code == 204  # signing out frees "alice2"
    assert Person(client, "alice2").id != alice.id


def test_edits_deletions_and_reactions(client: TestClient[Any]) -> None:
    alice, bob = Person(client, "alice"), Person(client, "bob")
    msg = alice.send("general", "typo", "e1").json()
    url = f"/chat/rooms/general/messages/{msg['id']}"
    assert bob.request("PATCH", url, json={"text": "hacked"}).status_code == 403
    assert bob.request("DELETE", url).status_code == 403
    edited = alice.request("PATCH", url, json={"text": "fixed @bob"}).json()
    assert (edited["text"], edited["mentions"], edited["version"]) == ("fixed @bob", ["bob"], 2)
    assert edited["edited_at"] is not None
    assert alice.request("PATCH", url, json={"text": "fixed @bob"}).json()["version"] == 2  # no change
    react = f"{url}/reactions"
    assert alice.post(react, json={"emoji": "👍"}).json()["reactions"] == [
        {"emoji": "👍", "users": [{"id": alice.id, "name": "alice"}]}
    ]
    both = bob.post(react, json={"emoji": "👍"}).json()
    assert [u["name"] for u in both["reactions"][0]["users"]] == ["alice", "bob"]
    assert both["version"] == 4
    assert alice.post(react, json={"emoji": "👍"}).json()["reactions"] == [
        {"emoji": "👍", "users": [{"id": bob.id, "name": "bob"}]}
    ]
    assert history(bob)["messages"][0]["reactions"][0]["users"] == [{"id": bob.id, "name": "bob"}]
    assert alice.request("DELETE", url).status_code == 204
    assert history(alice)["messages"] == []
    assert alice.request("PATCH", url, json={"text": "again"}).status_code == 404
    assert bob.post(react, json={"emoji": "👍"}).status_code == 404
    # A retried send of a deleted message is still that message, not a new one.
    assert alice.send("general", "typo", "e1").json()["deleted"] is True
    huge = 10**30
    assert alice.request("PATCH", f"/chat/rooms/general/messages/{huge}", json={"text": "x"}).status_code == 404


def test_reactions_are_capped(store: str | None, tmp_path: Path) -> None:
    with client_for(store, tmp_path, max_reactions=2) as c:
        alice = Person(c, "alice")
        url = f"/chat/rooms/general/messages/{alice.send('general', 'hi', 'r1').json()['id']}/reactions"
        assert alice.post(url, json={"emoji": "👍"}).status_code == 200
        assert alice.post(url, json={"emoji": "🎉"}).status_code == 200
        r = alice.post(url, json={"emoji": "🚀"})
        assert r.status_code == 409
        assert "at most 2 different emoji" in r.json()["detail"]


def test_history_pages_and_unread_counts(client: TestClient[Any]) -> None:
    alice, bob = Person(client, "alice"), Person(client, "bob")
    ids = [alice.send("general", f"m{i}", f"h{i}").json()["id"] for i in range(7)]
    page = history(bob, limit=3)
    assert [m["id"] for m in page["messages"]] == ids[4:]
    assert page["has_more"] is True
    assert page["latest_event_id"]
    assert [m["id"] for m in history(bob, limit=3, before=ids[4])["messages"]] == ids[1:4]
    last = history(bob, limit=3, before=ids[1])
    assert ([m["id"] for m in last["messages"]], last["has_more"]) == (ids[:1], False)
    assert history(bob, before=10**30)["messages"][-1]["id"] == ids[-1]

    def unread(p: Person) -> dict[str, int]:
        return {r["name"]: r["unread"] for r in p.get("/chat/rooms").json()["rooms"]}

    assert unread(bob) == {"general": 7, "random": 0}
    assert unread(alice) == {"general": 0, "random": 0}  # your own messages are read
    assert bob.post("/chat/rooms/general/read", json={"id": ids[5]}).status_code == 204
    assert unread(bob)["general"] == 1
    assert bob.post("/chat/rooms/general/read", json={"id": 1}).status_code == 204  # never backwards
    assert unread(bob)["general"] == 1
    assert history(bob)["last_read"] == ids[5]
    alice.request("DELETE", f"/chat/rooms/general/messages/{ids[6]}")
    assert unread(bob)["general"] == 0  # a deleted message is not unread
    assert unread(Person(client, "carol")) == {"general": 0, "random": 0}  # new people start read


def test_rooms_and_their_limit(store: str | None, tmp_path: Path) -> None:
    with client_for(store, tmp_path, max_rooms=3) as c:
        alice = Person(c, "alice")
        r = alice.post("/chat/rooms", json={"name": "dev-ops"})
        assert r.status_code == 201
        assert r.json()["created_by"] == "alice"
        assert alice.post("/chat/rooms", json={"name": "dev-ops"}).status_code == 409
        r = alice.post("/chat/rooms", json={"name": "one-too-many"})
        assert r.status_code == 409
        assert "limit is 3" in r.json()["detail"]
        body = alice.get("/chat/rooms").json()
        assert [room["name"] for room in body["rooms"]] == ["dev-ops", "general", "random"]
        assert body["latest_event_id"]
        assert alice.send("dev-ops", "first!", "d1").status_code == 201


def test_rate_limit_is_429_with_retry_after(store: str | None, tmp_path: Path) -> None:
    with client_for(store, tmp_path, rate=0.5, burst=3) as c:
        alice, bob = Person(c, "alice"), Person(c, "bob")
        codes = [alice.send("general", f"m{i}", f"id{i}").status_code for i in range(4)]
        assert codes == [201, 201, 201, 429]
        r = alice.send("general", "m9", "id9")
        assert int(r.headers["Retry-After"]) >= 1
        assert "too many requests" in r.json()["detail"]
        assert alice.send("general", "m0", "id0").status_code == 201  # a retry is not a new write
        assert bob.send("general", "bob is not limited", "b0").status_code == 201


def test_files_upload_download_and_go_with_their_message(client: TestClient[Any]) -> None:
    alice, bob = Person(client, "alice"), Person(client, "bob")

    def upload(body: bytes, name: str, cmid: str, content_type: str) -> Any:
        params = {"name": name, "client_msg_id": cmid}
        return alice.post(
            "/chat/rooms/general/files", params=params, content=body, headers={"Content-Type": content_type}
        )

    img = upload(PNG, "cat.png", "f1", "image/png")
    assert img.status_code == 201
    file = img.json()["file"]
    assert (file["image"], file["size"], file["type"]) == (True, len(PNG), "image/png")
    assert upload(PNG, "cat.png", "f1", "image/png").json() == img.json()  # a retry: the same message
    got = bob.get(file["url"])
    assert (got.status_code, got.content, got.headers["content-type"]) == (200, PNG, "image/png")
    assert got.headers["content-disposition"].startswith("inline")
    html = upload(b"<script>alert(1)</script>", "x.png", "f2", "image/png").json()["file"]
    got = bob.get(html["url"])
    assert got.headers["content-type"] == "application/octet-stream"
    assert "sandbox" in got.headers["content-security-policy"]
    assert upload(b"", "empty.txt", "f3", "text/plain").status_code == 422
    assert alice.request("DELETE", f"/chat/rooms/general/messages/{img.json()['id']}").status_code == 204
    assert bob.get(file["url"]).status_code == 404
    assert bob.get("/chat/files/not-an-id/x").status_code == 404


def test_uploads_past_the_limit_are_413(store: str | None, tmp_path: Path) -> None:
    with client_for(store, tmp_path, max_file_bytes=1024) as c:
        alice = Person(c, "alice")
        url = "/chat/rooms/general/files"
        exact = alice.post(url, params={"name": "a.bin", "client_msg_id": "a"}, content=b"\x00" * 1024, headers=OCTETS)
        assert exact.status_code == 201
        r = alice.post(url, params={"name": "b.bin", "client_msg_id": "b"}, content=b"\x00" * 1025, headers=OCTETS)
        assert r.status_code == 413
        assert "file too large" in r.json()["detail"]
        assert [m["file"]["name"] for m in history(alice)["messages"]] == ["a.bin"]
