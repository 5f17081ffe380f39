"""The chat's HTTP API in-process: sessions, idempotent sends, rules, limits, files, rooms."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from chat import ChatSettings
from chat.session import COOKIE

from .conftest import Person, chat_client

MIB = 1024 * 1024


def history(person: Person, room: str = "general", **params: Any) -> dict[str, Any]:
    r = person.get(f"/chat/rooms/{room}/messages", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# -- sessions -------------------------------------------------------------------------------------


def test_joining_sets_a_signed_httponly_cookie(client: TestClient[Any]) -> None:
    assert client.get("/chat/rooms").status_code == 401
    r = client.post("/chat/session", json={"name": "alice"})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "Path=/;" in cookie  # the whole origin: the shared connection (/sse/mux) carries it
    assert "SameSite=lax" in cookie
    assert client.get("/chat/session").json()["name"] == "alice"
    client.cookies.set(COOKIE, client.cookies[COOKIE][:-3] + "AAA")  # tampered
    assert client.get("/chat/session").status_code == 401


def test_names_are_unique_among_people_online(client: TestClient[Any], alice: Person) -> None:
    r = client.post("/chat/session", json={"name": "ALICE"})
    assert r.status_code == 409
    assert "taken" in r.json()["detail"]
    client.cookies.clear()
    r = client.post("/chat/session", json={"name": "no spaces allowed"})
    assert r.status_code == 422
    assert "a name is 1-24 characters" in r.json()["detail"]
    # Renaming yourself is fine, and frees the old name.
    renamed = alice.post("/chat/session", json={"name": "alice2"})
    assert renamed.status_code == 200
    assert renamed.json()["id"] == alice.id
    assert Person(client, "alice").name == "alice"


def test_signing_out_frees_the_name(client: TestClient[Any], alice: Person) -> None:
    r = alice.request("DELETE", "/chat/session")
    assert r.status_code == 204
    assert 'chat_session=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    assert Person(client, "alice").id != alice.id


def test_sessions_survive_a_restart(tmp_path: Path) -> None:
    with chat_client(tmp_path) as c:
        cookie = Person(c, "alice").cookie
    with chat_client(tmp_path) as c:
        r = c.get("/chat/session", headers={"Cookie": f"{COOKIE}={cookie}"})
        assert r.status_code == 200
        assert r.json()["name"] == "alice"
    assert (tmp_path / "chat-secret.key").stat().st_mode & 0o077 == 0


# -- messages -------------------------------------------------------------------------------------


def test_send_returns_the_stored_message(alice: Person) -> None:
    r = alice.send("general", "  hello @bob  ", "c1")
    assert r.status_code == 201
    msg = r.json()
    assert msg["text"] == "hello @bob"
    assert msg["author"] == "alice"
    assert msg["author_id"] == alice.id
    assert isinstance(msg["id"], int)
    assert msg["ts"] > 0
    assert msg["mentions"] == ["bob"]
    assert history(alice)["messages"] == [msg]


def test_a_retried_send_returns_the_same_message_and_stores_one(alice: Person) -> None:
    first = alice.send("general", "once", "retry-me")
    again = alice.send("general", "once", "retry-me")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [m["text"] for m in history(alice)["messages"]] == ["once"]
    # The same id in another room is a client bug, not a retry.
    r = alice.send("random", "once", "retry-me")
    assert r.status_code == 409
    assert "already used" in r.json()["detail"]


def test_client_ids_are_per_person(alice: Person, bob: Person) -> None:
    a = alice.send("general", "from alice", "same-id").json()
    b = bob.send("general", "from bob", "same-id").json()
    assert a["id"] != b["id"]


def test_text_rules_are_422_naming_the_rule(alice: Person) -> None:
    cases = [
        ("", "must not be empty"),
        ("   \n\t", "must not be empty"),
        ("x" * 4001, "at most 4000 characters"),
    ]
    for text, rule in cases:
        r = alice.send("general", text, "c")
        assert r.status_code == 422, text
        assert rule in r.json()["detail"]
    assert alice.send("general", "x" * 4000, "c").status_code == 201
    r = alice.send("general", "hi", "bad id!")
    assert r.status_code == 422
    assert "client_msg_id" in r.json()["detail"]
    r = alice.post("/chat/rooms/general/messages", json={"text": "no id"})
    assert r.status_code == 400  # malformed body: Litestar's own validation
    assert alice.send("nowhere", "hi", "c2").status_code == 404


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    assert (ChatSettings().rate, ChatSettings().burst) == (10.0, 20)
    with chat_client(tmp_path, rate=0.5, burst=5) as c:
        alice, bob = Person(c, "alice"), Person(c, "bob")
        codes = [alice.send("general", f"m{i}", f"id{i}").status_code for i in range(6)]
        assert codes == [201] * 5 + [429]
        r = alice.send("general", "m6", "id6")
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert "too many requests" in r.json()["detail"]
        # A retry of a message that got through is not a new write: still answered.
        assert alice.send("general", "m0", "id0").status_code == 201
        assert bob.send("general", "bob is not limited", "b0").status_code == 201


def test_edit_and_delete_only_your_own(alice: Person, bob: Person) -> None:
    msg = alice.send("general", "typo", "e1").json()
    url = f"/chat/rooms/general/messages/{msg['id']}"
    assert bob.request("PATCH", url, json={"text": "hacked"}).status_code == 403
    assert bob.request("DELETE", url).status_code == 403
    edited = alice.request("PATCH", url, json={"text": "fixed"})
    assert edited.status_code == 200
    assert edited.json()["text"] == "fixed"
    assert edited.json()["edited_at"] is not None
    assert edited.json()["version"] == msg["version"] + 1
    assert alice.request("PATCH", url, json={"text": " "}).status_code == 422
    assert alice.request("DELETE", url).status_code == 204
    assert history(alice)["messages"] == []
    assert alice.request("PATCH", url, json={"text": "again"}).status_code == 404
    assert alice.request("DELETE", url).status_code == 404


def test_reactions_toggle_per_person(alice: Person, bob: Person, client: TestClient[Any]) -> None:
    msg = alice.send("general", "react to me", "r1").json()
    url = f"/chat/rooms/general/messages/{msg['id']}/reactions"
    assert alice.post(url, json={"emoji": "👍"}).json()["reactions"] == [
        {"emoji": "👍", "users": [{"id": alice.id, "name": "alice"}]}
    ]
    both = bob.post(url, json={"emoji": "👍"}).json()["reactions"]
    assert [u["name"] for u in both[0]["users"]] == ["alice", "bob"]
    assert alice.post(url, json={"emoji": "👍"}).json()["reactions"] == [
        {"emoji": "👍", "users": [{"id": bob.id, "name": "bob"}]}
    ]
    r = alice.post(url, json={"emoji": "lol"})
    assert r.status_code == 422
    assert "emoji" in r.json()["detail"]


def test_history_pages_backwards(alice: Person) -> None:
    ids = [alice.send("general", f"m{i}", f"h{i}").json()["id"] for i in range(7)]
    page = history(alice, limit=3)
    assert [m["id"] for m in page["messages"]] == ids[4:]
    assert page["has_more"] is True
    assert re.fullmatch(r"[0-9a-z]{8}-\d+", page["latest_event_id"])
    page = history(alice, limit=3, before=ids[4])
    assert [m["id"] for m in page["messages"]] == ids[1:4]
    page = history(alice, limit=3, before=ids[1])
    assert [m["id"] for m in page["messages"]] == ids[:1]
    assert page["has_more"] is False
    for bad in ({"limit": 0}, {"limit": 201}, {"before": 0}, {"limit": "x"}):
        assert alice.get("/chat/rooms/general/messages", params=bad).status_code == 400
    # Ids past what SQLite can hold are just "not found"/"nothing older", never a 500.
    huge = 10**30
    assert history(alice, before=huge)["messages"][-1]["id"] == ids[-1]
    assert alice.request("PATCH", f"/chat/rooms/general/messages/{huge}", json={"text": "x"}).status_code == 404
    assert alice.post(f"/chat/rooms/general/messages/{huge}/reactions", json={"emoji": "👍"}).status_code == 404
    assert alice.post("/chat/rooms/general/read", json={"id": huge}).status_code == 204


# -- rooms ----------------------------------------------------------------------------------------


def test_rooms_unread_counts_and_read_markers(alice: Person, bob: Person) -> None:
    def unread(p: Person) -> dict[str, int]:
        return {r["name"]: r["unread"] for r in p.get("/chat/rooms").json()["rooms"]}

    assert unread(bob) == {"general": 0, "random": 0}
    last = [alice.send("general", f"m{i}", f"u{i}").json()["id"] for i in range(3)][-1]
    assert unread(bob) == {"general": 3, "random": 0}
    assert unread(alice) == {"general": 0, "random": 0}  # your own messages are read
    assert bob.post("/chat/rooms/general/read", json={"id": last - 1}).status_code == 204
    assert unread(bob)["general"] == 1
    assert bob.post("/chat/rooms/general/read", json={"id": 1}).status_code == 204  # never backwards
    assert unread(bob)["general"] == 1


def test_creating_rooms_and_their_limits(tmp_path: Path) -> None:
    with chat_client(tmp_path, max_rooms=3) as c:
        alice = Person(c, "alice")
        r = alice.post("/chat/rooms", json={"name": "dev-ops"})
        assert r.status_code == 201
        assert r.json()["name"] == "dev-ops"
        assert r.json()["created_by"] == "alice"
        assert alice.post("/chat/rooms", json={"name": "dev-ops"}).status_code == 409
        r = alice.post("/chat/rooms", json={"name": "Has Spaces"})
        assert r.status_code == 422
        assert "lowercase" in r.json()["detail"]
        r = alice.post("/chat/rooms", json={"name": "one-too-many"})
        assert r.status_code == 409
        assert "limit is 3" in r.json()["detail"]
        names = [room["name"] for room in alice.get("/chat/rooms").json()["rooms"]]
        assert names == ["dev-ops", "general", "random"]
        assert alice.send("dev-ops", "first!", "d1").status_code == 201


def test_cross_site_writes_are_refused(alice: Person) -> None:
    r = alice.post(
        "/chat/rooms/general/messages",
        json={"text": "csrf", "client_msg_id": "x1"},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403
    assert history(alice)["messages"] == []


def test_json_bodies_are_small(alice: Person) -> None:
    r = alice.post(
        "/chat/rooms/general/messages",
        content=b"{" + b" " * 70_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413


# -- files ----------------------------------------------------------------------------------------


def upload(person: Person, body: Any, name: str, cmid: str, content_type: str) -> Any:
    return person.post(
        "/chat/rooms/general/files",
        params={"name": name, "client_msg_id": cmid},
        content=body,
        headers={"Content-Type": content_type},
    )


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def test_images_are_shown_inline_other_files_downloaded(alice: Person, tmp_path: Path) -> None:
    img = upload(alice, PNG, "cat.png", "f1", "image/png")
    assert img.status_code == 201
    file = img.json()["file"]
    assert file["image"] is True
    assert file["size"] == len(PNG)
    assert file["name"] == "cat.png"
    got = alice.get(file["url"])
    assert got.status_code == 200
    assert got.content == PNG
    assert got.headers["content-type"] == "image/png"
    assert got.headers["content-disposition"].startswith("inline")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert list((tmp_path / "chat-files").iterdir()) == [tmp_path / "chat-files" / file["id"]]

    # HTML claiming to be an image is neither an image nor HTML when served.
    page = upload(alice, b"<html><script>alert(1)</script>", "x.png", "f2", "image/png").json()["file"]
    assert page["image"] is False
    got = alice.get(page["url"])
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"].startswith("attachment;")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in got.headers["content-security-policy"]

    # Non-ASCII names survive, encoded per RFC 6266.
    doc = upload(alice, b"%PDF-1.4", "Résumé 2024.pdf", "f3", "application/pdf").json()["file"]
    assert doc["type"] == "application/pdf"
    got = alice.get(doc["url"])
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9%202024.pdf" in got.headers["content-disposition"]


def test_upload_retry_and_delete(alice: Person, bob: Person, tmp_path: Path) -> None:
    first = upload(alice, PNG, "a.png", "same", "image/png").json()
    again = upload(alice, PNG, "a.png", "same", "image/png")
    assert again.json() == first
    assert len(list((tmp_path / "chat-files").iterdir())) == 1
    url = first["file"]["url"]
    assert bob.get(url).status_code == 200
    assert alice.request("DELETE", f"/chat/rooms/general/messages/{first['id']}").status_code == 204
    assert bob.get(url).status_code == 404
    assert list((tmp_path / "chat-files").iterdir()) == []
    assert bob.get("/chat/files/../../chat.sqlite3/x").status_code == 404


def test_uploads_over_10_mib_are_413(alice: Person, tmp_path: Path) -> None:
    exact = upload(alice, b"\x00" * (10 * MIB), "big.bin", "big", "application/octet-stream")
    assert exact.status_code == 201
    r = upload(alice, b"\x00" * (10 * MIB + 1), "bigger.bin", "bigger", "application/octet-stream")
    assert r.status_code == 413
    assert "limit is 10 MiB" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        for _ in range(11):
            yield b"\x00" * MIB

    r = upload(alice, chunks(), "stream.bin", "stream", "application/octet-stream")
    assert r.status_code == 413
    assert upload(alice, b"", "empty.txt", "empty", "text/plain").status_code == 422
    assert len(list((tmp_path / "chat-files").iterdir())) == 1  # only the one that fit
    assert [m["file"]["name"] for m in history(alice)["messages"]] == ["big.bin"]


def test_the_page_has_a_strict_csp_and_no_inline_script(client: TestClient[Any]) -> None:
    r = client.get("/chat/")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert re.findall(r"<script(?![^>]*\bsrc=)", r.text) == []
    assert client.get("/chat/static/sse.js").status_code == 200
    assert client.get("/chat/static/messages.js").status_code == 200


def test_a_database_failure_is_503_not_500(alice: Person, client: TestClient[Any]) -> None:
    chat = client.app.state.chat

    def locked(*args: Any) -> Any:
        raise sqlite3.OperationalError("database is locked")

    real = chat.db.write
    chat.db.write = locked
    try:
        r = alice.send("general", "hello", "db1")
    finally:
        chat.db.write = real
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"
    assert "retry shortly" in r.json()["detail"]
    assert alice.send("general", "hello", "db1").status_code == 201  # the retry goes through
