"""Several chat instances on one Redis: people on different instances talk, resume anywhere,
and nothing acknowledged is lost when an instance or Redis goes away (issue 7); the cap on
room members on both stores (issue 9)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import ServerSentEvent

from chat import ChatSettings, create_app
from chat.redis_conn import RedisConn
from chat.redis_presence import RedisRoster
from chat.session import User
from tests.chat.scaleout_helpers import EVENTS, MESSAGES, STORED, Follower, instances, messages_of, on
from tests.chat.stream_helpers import Watch, data
from tests.rig import LiveServer, RedisServer, free_port, wait_until

from .conftest import Person

ROOT = Path(__file__).resolve().parents[2]


def stored_after(url: str, after: str, room: str = "general") -> list[tuple[str, str, str]]:
    """What Redis holds after ``after`` in the room's stream: (id, event, data)."""
    raw, _, tag = after.partition(".")  # an SSE id is the stream id and its epoch's tag
    with redis.Redis.from_url(url, decode_responses=True) as r:
        entries = r.xrange(f"sse:stream:room:{room}", min="(" + raw)
    return [(f"{eid}.{tag}", fields["e"], fields["d"]) for eid, fields in entries]


def stored(events: list[ServerSentEvent]) -> list[tuple[str, str, str]]:
    return [(e.id, e.event, e.data) for e in events if e.event in STORED]


def until(watch: Watch, event: str, where: Any = lambda d: True, limit: int = 50) -> ServerSentEvent:
    """The next ``event`` whose data satisfies ``where`` (others are skipped)."""
    for _ in range(limit):
        sse = watch.until(event, limit)
        if where(data(sse)):
            return sse
    raise AssertionError(f"no matching {event!r}")


@pytest.mark.redis
def test_people_on_two_instances_talk_and_resume_on_the_other(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = ChatSettings(presence_grace=0.3)
    with (
        instances(redis_server.url, tmp_path, settings) as (one, two),
        httpx.Client(base_url=one.url, timeout=10) as h1,
        httpx.Client(base_url=two.url, timeout=10) as h2,
    ):
        alice, bob = Person(h1, "alice"), Person(h2, "bob")  # joined on different instances
        since = bob.get(MESSAGES).json()["latest_event_id"]
        wa = Watch(one.url, EVENTS, alice, since)
        wa.until("presence")
        alice.send("general", "anyone here?", "a0")
        wa.until("message")  # instance 1 reads the room now: it hears what instance 2 announces
        wb = Watch(two.url, EVENTS, bob, since)
        try:
            assert sorted(m["name"] for m in data(wb.until("presence"))["members"]) == ["alice", "bob"]
            assert data(until(wa, "join", lambda d: d["name"] == "bob")) == {"id": bob.id, "name": "bob"}
            assert data(wb.until("message"))["text"] == "anyone here?"  # sent before he connected
            hi = alice.send("general", "hi @bob", "a1").json()
            assert data(wb.until("message"))["text"] == "hi @bob"
            bob.send("general", "hi alice", "b1")
            assert data(until(wa, "message", lambda d: d["author"] == "bob"))["text"] == "hi alice"
            # Typing is ephemeral, live only (an instance hears it once its reader of the room is
            # up, which the messages above have shown).
            assert alice.post("/chat/rooms/general/typing").status_code == 204
            assert data(wb.until("typing")) == {"id": alice.id, "name": "alice"}
            assert bob.post("/chat/rooms/general/typing").status_code == 204
            assert data(until(wa, "typing", lambda d: d["id"] == bob.id))["name"] == "bob"
            alice.request("PATCH", f"{MESSAGES}/{hi['id']}", json={"text": "hello @bob"})
            assert data(wb.until("edit"))["text"] == "hello @bob"
            bob.post(f"{MESSAGES}/{hi['id']}/reactions", json={"emoji": "👋"})
            assert data(wa.until("reaction"))["reactions"][0]["users"] == [{"id": bob.id, "name": "bob"}]
            last = wb.until("reaction").id
        finally:
            wb.close()

        # Bob is away (his tab closed on instance 2); the conversation goes on.
        missed = [alice.send("general", f"while away {i}", f"w{i}").json() for i in range(3)]
        alice.request("PATCH", f"{MESSAGES}/{missed[0]['id']}", json={"text": "while away 0 (edited)"})
        alice.request("DELETE", f"{MESSAGES}/{missed[1]['id']}")
        expected = stored_after(redis_server.url, last)
        assert [e for _, e, _ in expected] == ["message", "message", "message", "edit", "delete"]

        # He comes back on instance 1 with his Last-Event-ID: exactly what he missed, once, in order.
        back = Watch(one.url, EVENTS, on(bob, h1), last)
        try:
            got: list[ServerSentEvent] = []
            while len(stored(got)) < len(expected):
                got += back.next()
            assert stored(got) == expected
            alice.send("general", "welcome back", "a2")
            live = until(back, "message")
            assert data(live)["text"] == "welcome back"
            assert live.id not in {i for i, _, _ in expected}
        finally:
            back.close()
            wa.close()


@pytest.mark.redis
def test_history_and_resume_are_the_same_on_every_instance(redis_server: RedisServer, tmp_path: Path) -> None:
    with (
        instances(redis_server.url, tmp_path, ChatSettings()) as (one, two),
        httpx.Client(base_url=one.url, timeout=10) as h1,
        httpx.Client(base_url=two.url, timeout=10) as h2,
    ):
        alice, bob = Person(h1, "alice"), Person(h2, "bob")
        start = alice.get(MESSAGES).json()["latest_event_id"]
        ids = []
        for i in range(6):
            who = alice if i % 2 == 0 else bob
            ids.append(who.send("general", f"m{i} @{'bob' if who is alice else 'alice'}", f"h{i}").json()["id"])
        alice.request("PATCH", f"{MESSAGES}/{ids[0]}", json={"text": "m0, edited"})
        bob.post(f"{MESSAGES}/{ids[0]}/reactions", json={"emoji": "🎉"})
        bob.request("DELETE", f"{MESSAGES}/{ids[3]}")

        for person in (alice, bob):
            pages = [
                [on(person, h).get(MESSAGES, params=p).json() for h in (h1, h2)]
                for p in ({}, {"limit": 2, "before": ids[4]})
            ]
            for first, second in pages:
                assert first == second
            assert [m["id"] for m in pages[0][0]["messages"]] == [ids[i] for i in (0, 1, 2, 4, 5)]
            assert pages[0][0]["messages"][0]["text"] == "m0, edited"
            assert [on(person, h).get("/chat/rooms").json() for h in (h1, h2)].count(
                person.get("/chat/rooms").json()
            ) == 2

        # Resuming from the same id gives the same events, with the same ids, on either instance.
        expected = stored_after(redis_server.url, start)
        assert len(expected) == 9
        replays = []
        for base in (one.url, two.url):
            w = Watch(base, EVENTS, bob, start)
            try:
                got: list[ServerSentEvent] = []
                while len(stored(got)) < len(expected):
                    got += w.next()
                replays.append(stored(got))
            finally:
                w.close()
        assert replays == [expected, expected]


def all_history(person: Person) -> list[dict[str, Any]]:
    """Every message of the room, oldest first, page by page."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200}
    while True:
        page = person.get(MESSAGES, params=params).json()
        out[:0] = page["messages"]
        if not page["has_more"]:
            return out
        params["before"] = page["messages"][0]["id"]


@pytest.mark.redis
def test_a_redis_outage_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Redis killed (kill -9) for 3 s mid-chat: sends meanwhile get 503 + Retry-After, every 201
    is in history once, and a reader connected throughout gets every one, in order, once."""
    redis_server = RedisServer(aof_dir=tmp_path / "aof")  # fsync before every reply
    with (
        redis_server.running(),
        instances(redis_server.url, tmp_path, ChatSettings(rate=1000, burst=1000)) as (one, two),
        httpx.Client(base_url=one.url, timeout=10) as h1,
        httpx.Client(base_url=two.url, timeout=10) as h2,
    ):
        alice, bob = Person(h1, "alice"), Person(h2, "bob")
        reader = Follower([two.url], bob, bob.get(MESSAGES).json()["latest_event_id"], "the end")
        reader.start()
        acked: dict[str, int] = {}
        refused: list[str] = []
        refusal_seconds: list[float] = []

        def send(cmid: str) -> None:
            began = time.monotonic()
            r = alice.send("general", f"text of {cmid}", cmid)
            if r.status_code == 201:
                acked[cmid] = r.json()["id"]
                return
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["status_code"] == 503
            assert "retry" in r.json()["detail"]
            refused.append(cmid)
            refusal_seconds.append(time.monotonic() - began)

        def chat_for(seconds: float, tag: str) -> None:
            end, i = time.monotonic() + seconds, 0
            while time.monotonic() < end:
                send(f"{tag}{i}")
                i += 1
                time.sleep(0.05)

        chat_for(1.0, "before")
        redis_server.kill()
        chat_for(3.0, "during")
        redis_server.start()
        chat_for(1.5, "after")
        assert refused, "no send was refused: was Redis really down?"
        assert all(cmid.startswith(("during", "after")) for cmid in refused)
        # The page retries a refused send with the same client_msg_id until it is stored.
        for cmid in list(refused):
            for _ in range(50):
                r = alice.send("general", f"text of {cmid}", cmid)
                if r.status_code == 201:
                    acked[cmid] = r.json()["id"]
                    break
                time.sleep(0.1)
            assert cmid in acked
        assert alice.send("general", "the end", "end").status_code == 201
        reader.done.wait(30)
        assert reader.error is None
        assert reader.done.is_set()

        got = messages_of(reader.events)
        assert [m["id"] for m in got[:-1]] == sorted(acked.values())  # all, in order, once
        assert [m["client_msg_id"] for m in got[:-1]] == sorted(acked, key=acked.__getitem__)
        assert [m["id"] for m in all_history(bob)[:-1]] == sorted(acked.values())
        print(
            f"\n{len(acked)} sends acknowledged, {len(refused)} refused with 503 during the outage "
            f"(slowest refusal {max(refusal_seconds) * 1000:.0f} ms, median "
            f"{sorted(refusal_seconds)[len(refusal_seconds) // 2] * 1000:.0f} ms)"
        )
        assert max(refusal_seconds) < 3.0


def spawn(port: int, url: str, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "chat", "--port", str(port), "--backend", url, "--data-dir", str(data_dir)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    def ready() -> bool:
        assert proc.poll() is None, "the chat process exited"
        try:
            return httpx.get(base + "/chat/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=30, what=f"{base} to serve")


@pytest.mark.redis
def test_clients_of_a_killed_instance_resume_on_the_other(redis_server: RedisServer, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    procs = [spawn(p, redis_server.url, tmp_path / f"d{i}", tmp_path / f"chat{i}.log") for i, p in enumerate(ports)]
    try:
        for base, proc in zip(bases, procs, strict=True):
            wait_ready(base, proc)
        with httpx.Client(base_url=bases[0], timeout=10) as h1, httpx.Client(base_url=bases[1], timeout=10) as h2:
            alice, bob = Person(h2, "alice"), Person(h1, "bob")
            doomed = on(alice, h1)  # alice also sends through the instance that will die
            reader = Follower(bases, bob, bob.get(MESSAGES).json()["latest_event_id"], "the end")
            reader.start()
            sent = [doomed.send("general", f"via 1: {i}", f"one{i}").json()["id"] for i in range(3)]
            sent += [alice.send("general", f"via 2: {i}", f"two{i}").json()["id"] for i in range(3)]
            wait_until(lambda: len(reader.events) >= 4, what="the reader to be reading")
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(10)
            sent += [alice.send("general", f"after the kill: {i}", f"after{i}").json()["id"] for i in range(4)]
            assert alice.send("general", "the end", "end").status_code == 201
            reader.done.wait(30)
            assert reader.error is None
            assert reader.done.is_set()
            assert reader.reconnects >= 1
            assert [m["id"] for m in messages_of(reader.events)[:-1]] == sent
            assert len({i for i, _, _ in reader.events}) == len(reader.events)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.mark.redis
def test_presence_is_shared_and_each_change_announced_once(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = ChatSettings(presence_grace=0.3, presence_ttl=1.5)
    with (
        instances(redis_server.url, tmp_path, settings) as (one, two),
        httpx.Client(base_url=one.url, timeout=10) as h1,
        httpx.Client(base_url=two.url, timeout=10) as h2,
    ):
        alice, bob, carol, dave = Person(h1, "alice"), Person(h2, "bob"), Person(h1, "carol"), Person(h2, "dave")
        watcher = Watch(one.url, EVENTS, alice)
        try:
            watcher.until("presence")
            alice.send("general", "hello", "m0")  # once it arrives, instance 1 reads the room
            watcher.until("message")
            tab1 = Watch(two.url, EVENTS, bob)  # bob is only on instance 2...
            until(watcher, "join", lambda d: d["name"] == "bob")
            late = Watch(one.url, EVENTS, carol)  # ...and instance 1 lists him
            assert sorted(m["name"] for m in data(late.until("presence"))["members"]) == ["alice", "bob", "carol"]
            late.close()
            tab2 = Watch(one.url, EVENTS, on(bob, h1))  # a second tab, on the other instance
            tab2.until("presence")
            tab1.close()
            tab2.close()
            time.sleep(1.0)  # past the grace period: bob has left, once
            alice.send("general", "marker", "m1")
            seen: list[ServerSentEvent] = []
            while not (seen and seen[-1].event == "message"):
                seen += watcher.next()
            about_bob = [e.event for e in seen if e.event in ("join", "leave") and data(e)["id"] == bob.id]
            assert about_bob == ["leave"]

            # An instance that stops heartbeating (killed) holds dave in the room: he leaves when its
            # entry expires, announced once, by one of the two instances still running.
            asyncio.run(ghost_instance_admits(redis_server.url, "general", User(dave.id, "dave"), ttl=2.0))
            late = Watch(two.url, EVENTS, carol)
            assert "dave" in [m["name"] for m in data(late.until("presence"))["members"]]
            began = time.monotonic()
            assert data(until(watcher, "leave", lambda d: d["id"] == dave.id)) == {"id": dave.id, "name": "dave"}
            assert time.monotonic() - began < 6
            late.close()
            time.sleep(1.0)  # every instance has reaped by now (heartbeat: 0.5 s)
            alice.send("general", "marker 2", "m2")
            seen = []
            while not (seen and seen[-1].event == "message"):
                seen += watcher.next()
            assert [e for e in seen if e.event in ("join", "leave") and data(e)["id"] == dave.id] == []
        finally:
            watcher.close()


async def ghost_instance_admits(url: str, room: str, user: User, ttl: float) -> None:
    """Put ``user`` in ``room`` as an instance would that then dies (it never heartbeats)."""
    conn = RedisConn(url, "sse:chat:")
    try:
        assert await RedisRoster(conn, ttl).add(room, user, None) == "new"
    finally:
        await conn.close()


def status_of(base: str, person: Person) -> tuple[int, dict[str, Any] | None]:
    """The status of opening the room's stream (the body too, if it is an error)."""
    headers = {"Cookie": f"chat_session={person.cookie}"}
    with httpx.Client(timeout=10) as c, c.stream("GET", base + EVENTS, headers=headers) as r:
        return r.status_code, (json.loads(r.read()) if r.status_code != 200 else None)


@pytest.mark.parametrize("store", [pytest.param("sqlite"), pytest.param("redis", marks=pytest.mark.redis)])
def test_a_full_room_refuses_one_more_member_with_409(store: str, tmp_path: Path) -> None:
    settings = ChatSettings(max_room_members=2, presence_grace=0.3)
    with contextlib.ExitStack() as stack:
        if store == "redis":
            redis_server = stack.enter_context(RedisServer().running())
            bases = [srv.url for srv in stack.enter_context(instances(redis_server.url, tmp_path, settings))]
        else:
            bases = [stack.enter_context(LiveServer(lambda: create_app(tmp_path, settings=settings))).url] * 2
        http = stack.enter_context(httpx.Client(base_url=bases[0], timeout=10))
        alice, bob, carol = Person(http, "alice"), Person(http, "bob"), Person(http, "carol")
        wa = stack.enter_context(contextlib.closing(Watch(bases[0], EVENTS, alice)))
        wb = Watch(bases[1], EVENTS, bob)
        wa.until("presence")
        wb.until("presence")
        status, body = status_of(bases[0], carol)
        assert status == 409
        assert body is not None
        assert body["status_code"] == 409
        assert "full" in body["detail"]
        assert "limit is 2" in body["detail"]
        assert status_of(bases[1], alice)[0] == 200  # already in: another tab is fine
        assert carol.get(MESSAGES).status_code == 200  # reading the history is not joining
        wb.close()  # bob leaves; after the grace period there is room for carol
        wait_until(lambda: status_of(bases[1], carol)[0] == 200, timeout=10, what="room for carol")


@pytest.mark.redis
def test_retention_keeps_the_newest_events_and_older_ids_get_reset(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = ChatSettings(redis_retention=10, rate=1000, burst=1000)
    with (
        instances(redis_server.url, tmp_path, settings, n=1) as (one,),
        httpx.Client(base_url=one.url, timeout=10) as http,
    ):
        alice = Person(http, "alice")
        first = alice.get(MESSAGES).json()["latest_event_id"]
        ids = [alice.send("general", f"m{i}", f"c{i}").json()["id"] for i in range(25)]
        kept = [m["id"] for m in all_history(alice)]
        assert 10 <= len(kept) <= 11  # the retention, plus the trim slack (a tenth, at most 100)
        assert kept == ids[-len(kept) :]
        with redis.Redis.from_url(redis_server.url, decode_responses=True) as r:
            assert r.zcard("sse:chat:room-msgs:general") == len(kept)
            assert len(r.keys("sse:chat:msg:*")) == len(kept)  # trimmed messages leave Redis too
        r = alice.send("general", "m0", "c0")  # a retry of a message past retention: not a new one
        assert r.status_code == 409
        assert "no longer kept" in r.json()["detail"]
        watch = Watch(one.url, EVENTS, alice, first)
        try:
            assert watch.next()[0].event == "presence"
            reset = watch.until("reset")
            assert data(reset)["reason"] == "evicted"
            assert reset.id == alice.get(MESSAGES).json()["latest_event_id"]
        finally:
            watch.close()
