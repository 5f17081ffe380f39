"""The backend contract, run against every backend (``memory``, ``redis`` and chat's ``sqlite``),
alone and under a Hub."""

from __future__ import annotations

import asyncio
import json

import pytest

from shared import Hub
from shared.backends import Entry, UnknownEventId

from .conftest import SMALL, Store
from .helpers import Listening, Subscriber

BIG = 1000  # retention for tests that are not about eviction


def _printable(event_id: str) -> bool:
    return 0 < len(event_id.encode()) <= 64 and all(0x21 <= ord(c) < 0x7F for c in event_id)


# -- storing and reading ------------------------------------------------------------------------


async def test_ids_are_ordered_and_latest_is_the_newest(store: Store) -> None:
    b = store.instance()
    await b.start()
    assert await b.latest_id("t") is None
    entries = [await b.append("t", f"m{i}", event="e" if i % 2 else None) for i in range(4)]
    ids = [e.id for e in entries]
    assert all(i is not None and _printable(i) for i in ids), ids
    keys = [b.order_key(i) for i in ids if i is not None]
    assert keys == sorted(keys)
    assert len(set(keys)) == 4
    assert [(e.event, e.data) for e in entries] == [(None, "m0"), ("e", "m1"), (None, "m2"), ("e", "m3")]
    await b.append("other", "x")
    assert await b.latest_id("t") == ids[-1]  # topics are separate


async def test_order_key_refuses_ids_that_are_not_ours(store: Store) -> None:
    b = store.instance()
    await b.start()
    for bad in ("", "nonsense", "1", "-", "a-b", "1-2-3"):
        with pytest.raises(ValueError):
            b.order_key(bad)


async def test_read_after_returns_exactly_what_came_after(store: Store) -> None:
    b = store.instance()
    await b.start()
    entries = [await b.append("t", f"m{i}", event="e") for i in range(4)]
    assert entries[0].id is not None
    assert await b.read_after("t", entries[0].id, 100) == entries[1:]
    assert await b.read_after("t", entries[0].id, 2) == entries[1:3]
    assert await b.read_after("t", str(entries[-1].id), 100) == []


async def test_ids_that_cannot_be_resumed_say_why(store: Store) -> None:
    b = store.instance(retention=5)
    await b.start()
    ids = [str((await b.append("t", f"m{i}")).id) for i in range(10)]

    async def reason(event_id: str) -> str:
        with pytest.raises(UnknownEventId) as info:
            await b.read_after("t", event_id, 100)
        assert info.value.event_id == event_id
        return info.value.reason

    if store.evicts:
        assert await reason(ids[0]) == "evicted"
        assert await reason(ids[3]) == "evicted"  # m4 is gone: resuming would skip it
        # Right after the last evicted event nothing is missing: the five kept ones come back.
        assert [e.data for e in await b.read_after("t", ids[4], 100)] == [f"m{i}" for i in range(5, 10)]
    assert await reason("not-an-id-at-all") == "unknown"
    assert await reason("") == "unknown"
    assert await reason(store.future_id(ids[-1])) == "unknown"


async def test_an_id_never_handed_out_is_foreign(store: Store) -> None:
    b = store.instance()
    await b.start()
    first = str((await b.append("t", "a")).id)
    await asyncio.sleep(0.01)  # the next id gets a later millisecond
    await b.append("t", "b")
    with pytest.raises(UnknownEventId) as info:
        await b.read_after("t", store.foreign_id(first), 100)
    assert info.value.reason == "foreign"


# -- listening ------------------------------------------------------------------------------------


async def test_the_origin_id_resumes_from_the_first_event(store: Store) -> None:
    """The id a reset carries on a topic with no events (issue 16): resumable, before every event."""
    backend = store.instance()
    origin = await backend.origin_id("o")
    assert await backend.read_after("o", origin, 10) == []  # a topic that has no events yet
    ids = [(await backend.append("o", f"m{i}")).id for i in range(3)]
    assert backend.order_key(origin) < backend.order_key(ids[0] or "")
    assert [e.data for e in await backend.read_after("o", await backend.origin_id("o"), 10)] == ["m0", "m1", "m2"]
    if not store.evicts:
        return
    for i in range(3, SMALL + 2):  # past the retention: the first events are gone
        await backend.append("o", f"m{i}")
    with pytest.raises(UnknownEventId) as caught:
        await backend.read_after("o", await backend.origin_id("o"), 10)
    assert caught.value.reason == "evicted"


async def test_listen_from_none_gives_what_is_kept_then_live_events(store: Store) -> None:
    b = store.instance(retention=5)
    await b.start()
    for i in range(7):
        await b.append("t", f"m{i}")
    async with Listening(b, "t", None) as lis:
        got = await lis.until(5)
        if not store.evicts:
            return
        assert [e.data for e in got] == [f"m{i}" for i in range(2, 7)]  # m0, m1 were evicted
        await b.append("t", "m7")
        await b.append("t", "m8", event="e")
        got = await lis.until(7)
        assert [(e.event, e.data) for e in got[5:]] == [(None, "m7"), ("e", "m8")]
        assert got[-1].id == await b.latest_id("t")
        await asyncio.sleep(0.05)
        assert len(lis.entries) == 7  # nothing twice


async def test_listen_from_an_id_gives_what_came_after_it(store: Store) -> None:
    b = store.instance(retention=BIG)
    await b.start()
    ids = [(await b.append("t", f"m{i}")).id for i in range(4)]
    async with Listening(b, "t", ids[1]) as lis:
        assert [e.data for e in await lis.until(2)] == ["m2", "m3"]
        live = await b.append("t", "m4")
        got = await lis.until(3)
        assert got[-1] == live
        assert [e.id for e in got] == [*ids[2:], live.id]


async def test_listen_from_an_empty_topic_gets_the_first_event(store: Store) -> None:
    b = store.instance()
    await b.start()
    async with Listening(b, "fresh", await b.latest_id("fresh")) as lis:
        await asyncio.sleep(0.05)
        first = await b.append("fresh", "hello")
        assert await lis.until(1) == [first]


async def test_listen_after_an_evicted_id_raises(store: Store) -> None:
    store.needs_retention()
    b = store.instance(retention=5)
    await b.start()
    ids = [str((await b.append("t", f"m{i}")).id) for i in range(10)]
    lis = Listening(b, "t", ids[0])
    error = await lis.ended()
    assert isinstance(error, UnknownEventId)
    assert error.reason == "evicted"
    assert lis.entries == []


async def test_ephemeral_events_are_delivered_live_and_never_stored(store: Store) -> None:
    b = store.instance(retention=BIG)
    await b.start()
    async with Listening(b, "t", None) as lis:
        s1 = await b.append("t", "s1")
        await lis.until(1)  # listening for sure: ephemeral events only reach current listeners
        typing = await b.append("t", "alice", event="typing", ephemeral=True)
        assert typing.id is None
        s2 = await b.append("t", "s2")
        got = await lis.until(3)
        assert [(e.id, e.event, e.data) for e in got] == [
            (s1.id, None, "s1"),
            (None, "typing", "alice"),
            (s2.id, None, "s2"),
        ]
    assert await b.latest_id("t") == s2.id
    assert await b.read_after("t", str(s1.id), 100) == [s2]
    async with Listening(b, "t", s1.id) as late:
        assert await late.until(1) == [s2]  # not replayed to a later listener
        await asyncio.sleep(0.05)
        assert late.entries == [s2]


async def test_follow_hands_events_over_inside_append_or_is_declined(store: Store) -> None:
    b = store.instance(retention=BIG)
    await b.start()
    ids = [(await b.append("t", f"m{i}")).id for i in range(3)]
    got: list[Entry] = []
    stop = b.follow("t", ids[0], got.extend)
    if store.kind != "memory":
        # Redis: other processes append too; SQLite: a listener re-reads the log after each commit.
        assert stop is None  # declined: the hub reads listen() instead
        return
    assert stop is not None
    assert [e.data for e in got] == ["m1", "m2"]
    live = await b.append("t", "m3")
    assert got[-1] == live  # handed over before append() returned
    typing = await b.append("t", "alice", event="typing", ephemeral=True)
    assert got[-1] == typing
    stop()
    await b.append("t", "m4")
    assert [e.data for e in got] == ["m1", "m2", "m3", "alice"]


async def test_close_ends_listeners(store: Store) -> None:
    b = store.instance()
    await b.start()
    await b.append("t", "x")
    lis = Listening(b, "t", None)
    await lis.until(1)
    await b.close()
    assert await lis.ended(timeout=5) is None


# -- under a hub ----------------------------------------------------------------------------------


async def test_hub_every_subscriber_gets_every_event_in_order(store: Store) -> None:
    async with Hub(store.instance(retention=BIG)) as hub:
        subs = [Subscriber(hub, "t") for _ in range(100)]
        for s in subs:
            await s.started()
        ids = [await hub.publish_json("t", {"i": i}, event="e") for i in range(30)]
        for s in subs:
            got = await s.until(30)
            assert [json.loads(d)["i"] for _, _, d in got] == list(range(30))
            assert [i for _, i, _ in got] == ids
        for s in subs:
            await s.stop()
        assert hub.stats() == {"topics": 0, "subscribers": 0}


async def test_hub_resume_gives_exactly_the_missed_events(store: Store) -> None:
    async with Hub(store.instance(retention=BIG)) as hub:
        ids = [await hub.publish("t", f"m{i}") for i in range(10)]
        sub = await Subscriber(hub, "t", last_id=ids[3]).started()
        got = await sub.until(6)
        assert [(i, d) for _, i, d in got] == [(ids[k], f"m{k}") for k in range(4, 10)]
        live = await hub.publish("t", "live")
        got = await sub.until(7)
        assert got[6] == ("message", live, "live")
        await asyncio.sleep(0.05)
        assert len(sub.events) == 7  # no duplicate between replay and live
        await sub.stop()


async def test_hub_turns_an_evicted_id_into_one_reset(store: Store) -> None:
    store.needs_retention()
    async with Hub(store.instance(retention=5)) as hub:
        ids = [await hub.publish("t", f"m{i}") for i in range(10)]
        sub = await Subscriber(hub, "t", last_id=ids[0]).started()
        got = await sub.until(1)
        assert got[0][0] == "reset"
        assert json.loads(got[0][2]) == {"reason": "evicted", "latest_id": ids[-1]}
        live = await hub.publish("t", "live")
        assert (await sub.until(2))[1] == ("message", live, "live")
        await sub.stop()


async def test_two_instances_share_topics_and_ids(store: Store) -> None:
    """Two hubs on one store (two app instances): each sees the other's events, including
    ephemeral ones in their place, and a client resumes on either with the same id."""
    async with Hub(store.instance(retention=BIG)) as a, Hub(store.instance(retention=BIG)) as b:
        on_a = await Subscriber(a, "room").started()
        b1 = await b.publish("room", "b1")
        await on_a.until(1)
        a1 = await a.publish("room", "a1")
        await b.publish("room", "bob", event="typing", ephemeral=True)
        b2 = await b.publish("room", "b2")
        got = await on_a.until(4)
        # An event without an id keeps the last one (WHATWG HTML 9.2.6), so "typing" reports a1.
        assert got == [("message", b1, "b1"), ("message", a1, "a1"), ("typing", a1, "bob"), ("message", b2, "b2")]
        await on_a.stop()
        # The client drops after a1 and reconnects to the other instance with Last-Event-ID: a1.
        on_b = await Subscriber(b, "room", last_id=a1).started()
        assert await on_b.until(1) == [("message", b2, "b2")]
        a2 = await a.publish("room", "a2")
        assert (await on_b.until(2))[1] == ("message", a2, "a2")
        await on_b.stop()


async def test_hub_after_the_store_lost_its_history_old_ids_get_a_reset(store: Store) -> None:
    """Issue 13.3: a new history (memory: a new process; redis: FLUSHALL) never replays or
    resumes from an id of the old one, and never hands one of its ids out again."""
    async with Hub(store.instance(BIG)) as hub:
        old = [await hub.publish("t", f"old{i}") for i in range(3)]
    await store.lose()
    async with Hub(store.instance(BIG)) as hub:
        new = [await hub.publish("t", f"new{i}") for i in range(3)]
        assert not set(old) & set(new)
        for last in old:
            sub = await Subscriber(hub, "t", last_id=last).started()
            first = (await sub.until(1))[0]
            assert first[0] == "reset", first
            assert json.loads(first[2])["latest_id"] == new[-1]
            await sub.stop()
