"""What only the Redis backend has: URL options, outages, lost data, gaps, connection counts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shared import Hub
from shared.backends import BackendUnavailable, UnknownEventId, from_url
from shared.backends.lua import load_lua, with_streams
from shared.backends.redis import RedisBackend, parse_stream_id
from tests.rig import RedisServer

from .helpers import Listening, Subscriber


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain client for looking inside Redis (and for breaking things)."""
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


APPEND = with_streams(load_lua("shared.backends", "lua/append.lua"))  # the backend's own append


def backend_for(server: RedisServer, query: str = "maxlen=1000") -> RedisBackend:
    backend = from_url(f"{server.url}?{query}")
    assert isinstance(backend, RedisBackend)
    return backend


# -- configuration (no server needed) -------------------------------------------------------------


def test_url_options() -> None:
    b = from_url("redis://127.0.0.1:6390/2?maxlen=500&prefix=app:&trim=exact&socket_timeout=0.25")
    assert isinstance(b, RedisBackend)
    assert (b.maxlen, b.trim_slack, b.prefix) == (500, 0, "app:")
    assert b.stream_key("chat:1") == "app:stream:chat:1"
    assert b.ephemeral_key("chat:1") == "app:ephemeral:chat:1"
    default = RedisBackend.from_url("redis://127.0.0.1:6390")
    assert (default.maxlen, default.trim_slack, default.prefix) == (10_000, 100, "sse:")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h/0?maxlen=lots", "maxlen"),
        ("redis://h/0?maxlen=0", "maxlen"),
        ("redis://h/0?trim=sometimes", "trim"),
        ("redis://h/0?ephemeral_maxlen=-1", "ephemeral_maxlen"),
        ("http://h/0", "not a Redis URL"),
    ],
)
def test_bad_url_options_are_refused_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisBackend.from_url(url)


def test_order_key_is_the_stream_id() -> None:
    b = RedisBackend.from_url("redis://127.0.0.1:6390")
    assert b.order_key("1700000000000-0") == (1700000000000, 0)
    assert b.order_key("1700000000000-12") < b.order_key("1700000000001-0")
    assert b.order_key("1700000000000-12.3f9c1a2b") == (1700000000000, 12)  # the epoch tag is not order
    for bad in ("1-", "-1", " 1-1", "1-1 ", "\u0661-\u0661", f"{2**64}-0", "1-2-3", "x" * 100):
        with pytest.raises(ValueError):
            parse_stream_id(bad)


# -- against a real redis-server ------------------------------------------------------------------


@pytest.mark.redis
async def test_ids_from_a_wiped_redis_are_of_another_epoch(redis_server: RedisServer) -> None:
    """The test server keeps nothing on disk: a restart loses every stream, and the epoch. An id
    carries its epoch's tag (issue 13.3), so one of the lost history is told apart for sure, even
    where its stream id would be a valid position in the new one."""
    b = backend_for(redis_server)
    await b.start()
    try:
        old = str((await b.append("t", "before")).id)
        # In threads: the event loop keeps running through the outage, as it would in a server.
        await asyncio.to_thread(redis_server.stop)
        await asyncio.to_thread(redis_server.start)
        with pytest.raises(UnknownEventId) as info:
            await b.read_after("t", old, 10)
        assert info.value.reason == "epoch"  # no epoch now: the history is gone
        new = await b.append("t", "after")  # the pool replaces its dead connections by itself
        assert str(new.id).rpartition(".")[2] != old.rpartition(".")[2]  # a new epoch, a new tag
        with pytest.raises(UnknownEventId) as info:
            await b.read_after("t", old, 10)
        assert info.value.reason == "epoch"
        same_position = old.rpartition(".")[0] + "." + str(new.id).rpartition(".")[2]
        with pytest.raises(UnknownEventId) as info:
            await b.read_after("t", same_position, 10)
        assert info.value.reason == "foreign"  # this epoch's tag, but never an entry of this stream
        assert await b.read_after("t", str(new.id), 10) == []
    finally:
        await b.close()


@pytest.mark.redis
@pytest.mark.slow
async def test_outage_fails_publishes_fast_and_listeners_resume(tmp_path: Path) -> None:
    # A Redis that keeps its data (AOF): one that comes back empty is a new epoch (see below).
    with RedisServer(aof_dir=tmp_path / "aof").running() as redis_server:
        await _outage(redis_server)


async def _outage(redis_server: RedisServer) -> None:
    async with Hub(backend_for(redis_server)) as hub:
        sub = await Subscriber(hub, "t").started()
        await hub.publish("t", "before")
        await sub.until(1)

        await asyncio.to_thread(redis_server.stop)
        down = time.monotonic()
        failures: list[float] = []
        while time.monotonic() - down < 2.0:
            began = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await hub.publish("t", "during")
            failures.append(time.monotonic() - began)
            await asyncio.sleep(0.2)
        with pytest.raises(BackendUnavailable):
            await hub.backend.latest_id("t")

        await asyncio.to_thread(redis_server.start)
        up = time.monotonic()
        ids = [await hub.publish("t", f"after{i}") for i in range(5)]  # accepted at once
        got = await sub.until(6, timeout=15)
        caught_up = time.monotonic() - up
        assert [d for _, _, d in got] == ["before"] + [f"after{i}" for i in range(5)]  # none lost, none "during"
        assert [i for _, i, _ in got[1:]] == ids
        print(
            f"\noutage: {len(failures)} publishes refused, slowest {max(failures) * 1000:.1f} ms;"
            f" subscriber caught up {caught_up:.2f} s after Redis came back"
        )
        assert max(failures) < 1.0
        await sub.stop()


async def _reader_id(admin: Redis) -> int:
    readers = [c for c in await admin.client_list() if c.get("name") == "sse-hub-reader"]
    assert len(readers) == 1, readers
    return int(readers[0]["id"])


@pytest.mark.redis
@pytest.mark.parametrize("disconnect", [True, False], ids=["while-disconnected", "while-behind"])
async def test_a_gap_past_retention_is_reported_not_skipped(
    redis_server: RedisServer, admin: Redis, disconnect: bool
) -> None:
    """More than ``maxlen`` events land while the reader is away (or before it reads them):
    ``listen`` raises ``UnknownEventId("evicted")`` instead of silently jumping ahead."""
    b = backend_for(redis_server, "maxlen=5&trim=exact")
    await b.start()
    try:
        ids = [str((await b.append("t", f"m{i}")).id) for i in range(2)]
        async with Listening(b, "t", None) as lis:
            await lis.until(2)
            reader = await _reader_id(admin)
            async with admin.pipeline(transaction=True) as pipe:  # atomically: the reader cannot slip in
                if disconnect:
                    pipe.execute_command("CLIENT", "KILL", "ID", reader)
                for i in range(10):
                    pipe.eval(APPEND, 1, b.stream_key("t"), f"burst{i}", 5, 0)
                await pipe.execute()
            error = await lis.ended()
            assert isinstance(error, UnknownEventId)
            assert (error.reason, error.event_id) == ("evicted", ids[-1])
            assert [e.data for e in lis.entries] == ["m0", "m1"]
    finally:
        await b.close()


@pytest.mark.redis
async def test_connections_do_not_grow_with_subscribers(redis_server: RedisServer, admin: Redis) -> None:
    topics = [f"topic{i}" for i in range(5)]
    async with Hub(backend_for(redis_server)) as hub:
        subs = [await Subscriber(hub, topics[i % 5]).started() for i in range(200)]
        for n in range(3):  # one publisher at a time
            for t in topics:
                await hub.publish(t, f"seq{n}")
        sequential = len(await admin.client_list()) - 1  # minus this admin connection
        await asyncio.gather(*(hub.publish(t, f"burst{n}") for n in range(20) for t in topics))
        for s in subs:
            assert len(await s.until(23)) == 23
        clients = [c for c in await admin.client_list() if c.get("name", "").startswith("sse-hub")]
        total = len(await admin.client_list()) - 1
        print(f"\n200 subscribers on 5 topics: {sequential} Redis connections, {total} after 100 concurrent publishes")
        assert [c["name"] for c in clients].count("sse-hub-reader") == 1  # one reader for all 5 topics
        assert sequential <= 1 + 10
        assert total == len(clients) <= 1 + 10  # the reader + the pool's bound
        for s in subs:
            await s.stop()


@pytest.mark.redis
async def test_ephemeral_events_expire_and_do_not_count_against_retention(
    redis_server: RedisServer, admin: Redis
) -> None:
    b = backend_for(redis_server, "maxlen=3&trim=exact")
    await b.start()
    try:
        kept = [await b.append("t", f"m{i}") for i in range(3)]
        for _ in range(10):
            await b.append("t", "cursor moved", event="presence", ephemeral=True)
        assert await b.read_after("t", str(kept[0].id), 10) == kept[1:]
        assert 0 < await admin.pttl(b.ephemeral_key("t")) <= 60_000
        assert await admin.xlen(b.stream_key("t")) == 3
    finally:
        await b.close()


@pytest.mark.redis
async def test_a_gap_reaches_hub_subscribers_as_a_reset(redis_server: RedisServer, admin: Redis) -> None:
    """The hub learns of a gap: its subscribers get a ``reset`` (inline, or when they resume
    after their stream ends), never a silent jump over lost events."""
    b = backend_for(redis_server, "maxlen=5&trim=exact")
    async with Hub(b) as hub:
        sub = await Subscriber(hub, "t").started()
        await hub.publish("t", "m0")
        await sub.until(1)
        reader = await _reader_id(admin)
        async with admin.pipeline(transaction=True) as pipe:
            pipe.execute_command("CLIENT", "KILL", "ID", reader)
            for i in range(10):
                pipe.eval(APPEND, 2, b.stream_key("t"), b._epoch_key, f"burst{i}", 5, 0)
            raw, epoch = (await pipe.execute())[-1]
            latest = f"{raw}.{epoch.rpartition('.')[2]}"  # as the backend tags it
        deadline = time.monotonic() + 10
        while not sub.task.done() and not any(e == "reset" for e, _, _ in sub.events):
            assert time.monotonic() < deadline, sub.events
            await asyncio.sleep(0.02)
        events = sub.events[1:]
        if not events:  # the stream ended: the client resumes from its last id, as EventSource does
            resumed = await Subscriber(hub, "t", last_id=sub.events[-1][1]).started()
            events = await resumed.until(1)
            await resumed.stop()
        assert events[0][0] == "reset"
        assert json.loads(events[0][2]) == {"reason": "evicted", "latest_id": latest}
        assert not any(d.startswith("burst") for _, _, d in events[:1])
        await sub.stop()


@pytest.mark.redis
async def test_cancel_and_close_are_prompt_even_while_connecting(redis_server: RedisServer) -> None:
    """A listen() cancelled at any moment ends (redis-py 8.1 can swallow a cancel that lands
    while it opens a connection), and close() does not wait for a blocking XREAD."""
    for delay in [0.0, 0.0005, 0.001, 0.002, 0.004] * 3:
        b = backend_for(redis_server)  # fresh: its first commands open connections
        lis = Listening(b, "t", None)
        await asyncio.sleep(delay)
        lis.task.cancel()
        await asyncio.wait_for(asyncio.gather(lis.task, return_exceptions=True), 2)
        await asyncio.wait_for(b.close(), 3)
    b = backend_for(redis_server)
    await b.start()
    await b.append("t", "x")
    async with Listening(b, "t", None) as lis:
        await lis.until(1)
        await asyncio.sleep(0.1)  # the reader now blocks in XREAD for up to 10 s
        began = time.monotonic()
        await b.close()
        assert time.monotonic() - began < 2.0
        assert await lis.ended(timeout=2) is None


async def test_an_ephemeral_event_published_right_after_subscribe_is_delivered(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener's first read may come after subscribe() returned; a typing notice published
    in that moment (from another instance) must still arrive."""
    original = RedisBackend._open

    async def slow_open(self: RedisBackend, topic: str, after: str | None, tag: str | None = None) -> object:
        await asyncio.sleep(0.2)
        return await original(self, topic, after, tag)

    monkeypatch.setattr(RedisBackend, "_open", slow_open)
    async with Hub(backend_for(redis_server)) as a, Hub(backend_for(redis_server)) as b:
        await b.publish("room", "old", "typing", ephemeral=True)  # before: never delivered
        async with a.subscribe("room") as sub:
            await b.publish("room", "new", "typing", ephemeral=True)
            chunk = await asyncio.wait_for(anext(aiter(sub)), 5)
        assert b"data: new" in chunk
        assert b"data: old" not in chunk


async def _wipe(how: str, server: RedisServer, admin: Redis) -> None:
    if how == "flushall":
        await admin.flushall()
    else:  # an empty Redis on the same port: a restart without persistence, or a failover
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)


@pytest.mark.redis
@pytest.mark.parametrize("how", ["flushall", "restart-empty"])
async def test_lost_data_gives_every_live_reader_an_epoch_reset_first(
    redis_server: RedisServer, admin: Redis, how: str
) -> None:
    """Issue 13.3: two instances, live readers on each; Redis loses everything. Every reader's
    next event is ``reset`` (reason ``epoch``), before any event of the new history; ids are
    never handed out twice; a resume from an old id gets ``reset`` too."""
    async with Hub(backend_for(redis_server)) as a, Hub(backend_for(redis_server)) as b:
        subs = [await Subscriber(hub, "t").started() for hub in (a, b, a, b)]
        old = [await a.publish("t", "old0"), await b.publish("t", "old1")]
        for s in subs:
            await s.until(2)
        await _wipe(how, redis_server, admin)
        began = time.monotonic()
        # Whoever publishes first after the loss: the readers must not pass it on as if nothing happened.
        new: list[str | None] = []
        deadline = time.monotonic() + 10
        while not new:
            try:
                new.append(await b.publish("t", "new0"))
            except BackendUnavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        for s in subs:
            await s.until(3, timeout=15)
        took = time.monotonic() - began
        for s in subs:
            event, _, data = s.events[2]
            assert event == "reset", s.events
            assert json.loads(data)["reason"] == "epoch"
            assert not any(d == "new0" for _, _, d in s.events[:3])
        new.append(await a.publish("t", "new1"))
        for s in subs:
            while not any(d == "new1" for _, _, d in s.events):
                await s.until(len(s.events) + 1)
            # After the reset: the new history, once each, in order. new0 may come live after the
            # reset when it was written while the reset was being made (its latest id was older).
            assert [d for _, _, d in s.events[3:]] in (["new1"], ["new0", "new1"]), s.events
        assert not set(old) & set(new)
        assert len(set(new)) == 2
        print(f"\n{how}: 4 readers on 2 instances reset {took:.2f} s after the loss (incl. the first publish)")
        # A client that reconnects with an id of the old history is reset, on either instance.
        for hub in (a, b):
            late = await Subscriber(hub, "t", last_id=old[-1]).started()
            first = (await late.until(1))[0]
            assert first[0] == "reset", first
            await late.stop()
        assert a.backend.epoch == b.backend.epoch  # type: ignore[attr-defined]
        for s in subs:
            await s.stop()


# -- an app's script on the backend's streams (issue 17.4) ---------------------------------------

# What chat's sends do: the app's own write (here a hash) and its event in one script, with a mark
# on the event that comes back to the script when the event is trimmed (chat forgets the message).
APP_SCRIPT = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return sse_append(KEYS[1], ARGV[2], 'message', ARGV[1], function(mark) redis.call('HDEL', KEYS[2], mark) end)
"""


@pytest.mark.redis
async def test_an_app_script_appends_events_the_backend_reads_and_trims(
    redis_server: RedisServer, admin: Redis
) -> None:
    """The contract between ``sse_append`` and the backend: an event an app's script appends is read
    back by the backend with its event name and data, under the backend's retention (the trim
    records what it dropped, so an old id is ``evicted``), and the app hears of each trimmed mark.
    A change to the stream fields or the trim on either side fails here, not silently in chat."""
    b = backend_for(redis_server, "maxlen=4&trim=exact&prefix=app:")
    try:
        await b.start()
        script = b.stream_script(APP_SCRIPT)
        keys = [b.stream_key("room"), "app:things"]
        # The script returns the stream id; the backend makes it an SSE id (with the epoch's tag).
        ids = [await b.event_id(str(await script(keys, [f"k{i}", f"v{i}"]))) for i in range(7)]
        origin = await b.origin_id("room")
        with pytest.raises(UnknownEventId) as info:
            await b.read_after("room", origin, 10)
        assert info.value.reason == "evicted"  # v0..v2 trimmed, and the backend knows it
        kept = await b.read_after("room", ids[2], 10)
        assert [(e.event, e.data) for e in kept] == [("message", f"v{i}") for i in range(3, 7)]
        assert [e.id for e in kept] == ids[3:]
        assert await b.latest_id("room") == ids[-1]
        # The app forgot exactly what was trimmed (its marks), in the same atomic step.
        assert sorted(await admin.hkeys("app:things")) == [f"k{i}" for i in range(3, 7)]
        # And the backend's own append keeps working on the same stream, with the same ids.
        entry = await b.append("room", "plain")
        assert (await b.read_after("room", ids[-1], 10)) == [entry]
    finally:
        await b.close()
