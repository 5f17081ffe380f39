"""Room streams against a real uvicorn: no gap after history, resume across restarts, resets,
edits in the log, ephemeral typing, presence with several tabs and a grace period."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat import ChatSettings, create_app
from tests.chat.stream_helpers import Watch, data
from tests.rig import LiveServer

from .conftest import Person


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = ChatSettings(presence_grace=0.3)
    with LiveServer(lambda: create_app(tmp_path, settings=settings)) as srv:
        yield srv


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def test_stream_from_the_history_id_has_no_gap_and_no_duplicate(server: LiveServer, http: httpx.Client) -> None:
    alice, bob = Person(http, "alice"), Person(http, "bob")
    for i in range(3):
        alice.send("general", f"before {i}", f"b{i}")
    page = bob.get("/chat/rooms/general/messages").json()
    # Sent after the history was read, before the stream is connected: must not be lost.
    for i in range(3):
        alice.send("general", f"between {i}", f"w{i}")
    watch = Watch(server.url, "/chat/rooms/general/events", bob, page["latest_event_id"])
    try:
        assert watch.next()[0].event == "presence"  # a snapshot first, without an id
        alice.send("general", "live", "l0")
        texts = [data(e)["text"] for e in watch.of("message", 4)]
        assert texts == ["between 0", "between 1", "between 2", "live"]
        assert [m["text"] for m in page["messages"]] == ["before 0", "before 1", "before 2"]
    finally:
        watch.close()


def test_edits_deletions_and_reactions_are_replayed_to_a_returning_client(
    server: LiveServer, http: httpx.Client
) -> None:
    alice, bob = Person(http, "alice"), Person(http, "bob")
    msg = alice.send("general", "draft", "d1").json()
    gone = alice.send("general", "oops", "d2").json()
    since = bob.get("/chat/rooms/general/messages").json()["latest_event_id"]
    base = "/chat/rooms/general/messages"
    alice.request("PATCH", f"{base}/{msg['id']}", json={"text": "final"})
    bob.post(f"{base}/{msg['id']}/reactions", json={"emoji": "🎉"})
    alice.request("DELETE", f"{base}/{gone['id']}")
    watch = Watch(server.url, "/chat/rooms/general/events", bob, since)
    try:
        got = [e for e in watch.next(4) if e.event != "presence"]
        assert [e.event for e in got] == ["edit", "reaction", "delete"]
        assert data(got[0])["text"] == "final"
        assert data(got[0])["version"] == 2
        assert data(got[1])["reactions"][0]["emoji"] == "🎉"
        assert data(got[1])["version"] == 3
        assert data(got[2]) == {"id": gone["id"], "version": 2}
    finally:
        watch.close()


def test_resume_across_a_server_restart_loses_and_doubles_nothing(server: LiveServer, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        alice, bob = Person(http, "alice"), Person(http, "bob")
        since = bob.get("/chat/rooms/general/messages").json()["latest_event_id"]
        watch = Watch(server.url, "/chat/rooms/general/events", bob, since)
        seen: list[str] = []
        try:
            for i in range(5):
                alice.send("general", f"m{i}", f"r{i}")
            seen = [e.id for e in watch.of("message", 5)]
            last = seen[-1]
        finally:
            watch.close()
        assert len(seen) == 5
    server.restart()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        alice.client = bob.client = http  # same cookies: the signing key is kept in the data dir
        for i in range(5, 8):
            r = alice.send("general", f"m{i}", f"r{i}")
            assert r.status_code == 201
        assert alice.send("general", "m4", "r4").headers.get("Idempotent-Replayed") == "true"
        watch = Watch(server.url, "/chat/rooms/general/events", bob, last)
        try:
            rest = watch.of("message", 3)
            alice.send("general", "m8", "r8")
            rest += watch.of("message", 1)
        finally:
            watch.close()
    assert [data(e)["text"] for e in rest] == ["m5", "m6", "m7", "m8"]
    assert len({*seen, *(e.id for e in rest)}) == 9


@pytest.mark.parametrize("bad_id", ["zzzzzzzz-3", "nonsense", "<img src=x>"])
def test_bad_or_foreign_ids_give_reset(server: LiveServer, http: httpx.Client, bad_id: str) -> None:
    alice = Person(http, "alice")
    alice.send("general", "hello", "x1")
    latest = alice.get("/chat/rooms/general/messages").json()["latest_event_id"]
    watch = Watch(server.url, "/chat/rooms/general/events", alice, bad_id)
    try:
        presence, reset = watch.next(2)
        assert presence.event == "presence"
        assert reset.event == "reset"
        assert reset.id == latest
        assert data(reset) == {"reason": "foreign" if bad_id.startswith("z") else "unknown", "latest_id": latest}
    finally:
        watch.close()


def test_typing_is_live_only(server: LiveServer, http: httpx.Client) -> None:
    alice, bob = Person(http, "alice"), Person(http, "bob")
    since = bob.get("/chat/rooms/general/messages").json()["latest_event_id"]
    watch = Watch(server.url, "/chat/rooms/general/events", bob, since)
    try:
        watch.until("presence")
        assert alice.post("/chat/rooms/general/typing").status_code == 204
        typing = watch.until("typing")
        assert typing.id == ""
        assert data(typing) == {"id": alice.id, "name": "alice"}
    finally:
        watch.close()
    alice.send("general", "done typing", "t1")
    again = Watch(server.url, "/chat/rooms/general/events", bob, since)
    try:
        events = again.next(2)  # presence snapshot, then the message: the typing is not replayed
        assert [e.event for e in events] == ["presence", "message"]
    finally:
        again.close()
    assert bob.post("/chat/rooms/nowhere/typing").status_code == 404


def test_presence_counts_tabs_once_and_waits_out_the_grace_period(server: LiveServer, http: httpx.Client) -> None:
    alice, bob = Person(http, "alice"), Person(http, "bob")
    room = "/chat/rooms/general/events"
    watcher = Watch(server.url, room, alice)
    try:
        snapshot = watcher.until("presence")
        assert [m["name"] for m in data(snapshot)["members"]] == ["alice"]
        watcher.until("join")  # alice's own
        tab1 = Watch(server.url, room, bob)
        assert data(watcher.until("join")) == {"id": bob.id, "name": "bob"}
        tab2 = Watch(server.url, room, bob)
        snapshot = tab2.until("presence")
        assert sorted(m["name"] for m in data(snapshot)["members"]) == ["alice", "bob"]
        tab1.close()
        time.sleep(0.6)  # past the grace period: one of bob's tabs is still open, so no leave
        alice.send("general", "marker 1", "m1")  # the next event, if no leave came before it
        assert watcher.next()[0].event == "message"
        tab2.close()  # bob's last tab: he leaves once the grace period is over
        began = time.monotonic()
        assert data(watcher.until("leave")) == {"id": bob.id, "name": "bob"}
        assert time.monotonic() - began >= 0.2
        # Back within the grace period: no leave and no join is announced.
        tab3 = Watch(server.url, room, bob)
        assert data(watcher.until("join"))["name"] == "bob"
        tab3.close()
        tab4 = Watch(server.url, room, bob)
        time.sleep(0.6)
        alice.send("general", "marker 2", "m2")
        assert watcher.next()[0].event == "message"
        tab4.close()
    finally:
        watcher.close()


def test_lobby_stream_announces_rooms_and_activity(server: LiveServer, http: httpx.Client) -> None:
    alice, bob = Person(http, "alice"), Person(http, "bob")
    since = bob.get("/chat/rooms").json()["latest_event_id"]
    lobby = Watch(server.url, "/chat/events", bob, since)
    try:
        alice.post("/chat/rooms", json={"name": "design"})
        room = lobby.until("room")
        assert data(room)["name"] == "design"
        assert room.id
        alice.send("design", "hi @bob", "a1")
        activity = lobby.until("activity")
        # Ephemeral (no id of its own: the last id seen stays the room's), so never replayed;
        # a page refreshes its unread counts from GET /chat/rooms when it reconnects.
        assert activity.id == room.id
        assert {k: data(activity)[k] for k in ("room", "author", "mentions")} == {
            "room": "design",
            "author": "alice",
            "mentions": ["bob"],
        }
    finally:
        lobby.close()
    r = httpx.get(server.url + "/chat/events")
    assert r.status_code == 401
