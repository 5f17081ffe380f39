"""The SQLite hub backend: ids, resume from the database, reset reasons, restarts, ordering."""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chat.backend import SqliteBackend, append_event
from chat.db import Database
from shared import Hub, HubSettings, UnknownEventId
from shared.decoder import Decoder
from shared.encoding import validate_event_id


def _append(conn: sqlite3.Connection, i: int) -> int:
    return append_event(conn, "room:x", "message", json.dumps(i))


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SqliteBackend]:
    db = Database(tmp_path / "chat.sqlite3")
    await db.open()
    b = SqliteBackend(db)
    await b.start()
    yield b
    await b.close()
    await db.close()


async def collect(
    hub: Hub, topic: str, n: int, last_id: str | None, started: asyncio.Event
) -> list[tuple[str, str | None, str]]:
    parser = Decoder()
    out: list[tuple[str, str | None, str]] = []

    async def run() -> None:
        async with hub.subscribe(topic, last_id) as sub:
            started.set()
            async for chunk in sub:
                out.extend((e.event, e.id, e.data) for e in parser.feed(chunk))
                if len(out) >= n:
                    return

    await asyncio.wait_for(run(), 10)
    return out


async def test_ids_are_printable_ordered_and_per_topic(backend: SqliteBackend) -> None:
    a1 = (await backend.append("room:a", "1", "message")).id
    b1 = (await backend.append("room:b", "x")).id
    a2 = (await backend.append("room:a", "2", "message")).id
    assert a1
    assert a2
    assert b1
    for event_id in (a1, a2, b1):
        assert validate_event_id(event_id) == event_id
        assert len(event_id) <= 64
    assert backend.order_key(a1) < backend.order_key(b1) < backend.order_key(a2)
    assert await backend.latest_id("room:a") == a2
    assert await backend.latest_id("room:none") is None
    got = await backend.read_after("room:a", a1, 100)
    assert [(e.id, e.event, e.data) for e in got] == [(a2, "message", "2")]
    assert await backend.read_after("room:a", a2, 100) == []
    # An id of another topic in the same file is still a position in the one log.
    assert [e.data for e in await backend.read_after("room:a", b1, 100)] == ["2"]


async def test_ephemeral_events_are_not_stored(backend: SqliteBackend) -> None:
    first = await backend.append("t", "kept")
    entry = await backend.append("t", "typing", "typing", ephemeral=True)
    assert entry.id is None
    assert first.id is not None
    assert await backend.read_after("t", first.id, 10) == []


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("zzzzzzzz-1", "foreign"),  # another database file
        ("garbage", "unknown"),
        ("", "unknown"),
        ("<script>", "unknown"),
    ],
)
async def test_ids_it_cannot_resume_from(backend: SqliteBackend, bad: str, reason: str) -> None:
    await backend.append("t", "x")
    with pytest.raises(UnknownEventId) as info:
        await backend.read_after("t", bad, 10)
    assert info.value.reason == reason


async def test_an_id_from_the_future_and_one_far_behind(backend: SqliteBackend) -> None:
    ids = [(await backend.append("t", str(i))).id for i in range(5)]
    assert ids[0] is not None
    future = f"{backend.db.db_id}-999"
    with pytest.raises(UnknownEventId, match="unknown"):
        await backend.read_after("t", future, 10)
    # More missed events than one page: the first page (the hub reads the next one after it).
    assert [e.data for e in await backend.read_after("t", ids[0], 3)] == ["1", "2", "3"]
    assert len(await backend.read_after("t", ids[0], 4)) == 4


async def test_ids_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    db = Database(path)
    await db.open()
    first = SqliteBackend(db)
    old = [(await first.append("t", f"m{i}")).id for i in range(3)]
    await db.close()

    db2 = Database(path)
    await db2.open()
    second = SqliteBackend(db2)
    assert await second.latest_id("t") == old[-1]
    new = (await second.append("t", "after restart")).id
    assert old[0] is not None
    assert [e.data for e in await second.read_after("t", old[0], 10)] == ["m1", "m2", "after restart"]
    assert new is not None
    assert second.order_key(new) > second.order_key(old[-1] or "")
    await db2.close()

    other = Database(tmp_path / "other.sqlite3")
    await other.open()
    with pytest.raises(UnknownEventId) as info:
        await SqliteBackend(other).read_after("t", old[0], 10)
    assert info.value.reason == "foreign"
    await other.close()


async def test_hub_replays_from_the_database_then_goes_live(backend: SqliteBackend) -> None:
    async with Hub(backend, HubSettings(heartbeat=60)) as hub:
        ids = [await hub.publish("t", f"m{i}", "message") for i in range(6)]
        started = asyncio.Event()
        task = asyncio.create_task(collect(hub, "t", 4, ids[2], started))
        await started.wait()
        live = await hub.publish("t", "live", "message")
        got = await task
        assert [(i, d) for _, i, d in got] == [(ids[3], "m3"), (ids[4], "m4"), (ids[5], "m5"), (live, "live")]


async def test_events_written_in_a_store_transaction_reach_listeners(backend: SqliteBackend) -> None:
    """The store writes the event row itself and then wakes the backend: listeners re-read the
    log, so they see every committed row in order even if wake-ups are late or merged."""
    async with Hub(backend, HubSettings(heartbeat=60)) as hub:
        started = asyncio.Event()
        task = asyncio.create_task(collect(hub, "room:x", 10, None, started))
        await started.wait()
        seq = 0
        for i in range(10):
            seq = await backend.db.write(functools.partial(_append, i=i))
            if i % 3 == 2:
                backend.committed("room:x", seq)  # one wake-up for several commits
        backend.committed("room:x", seq)
        got = await task
        assert [json.loads(d) for _, _, d in got] == list(range(10))
        keys = [backend.order_key(i or "") for _, i, _ in got]
        assert keys == sorted(keys)


async def test_resume_from_an_unknown_id_gives_reset_with_the_latest_id(backend: SqliteBackend) -> None:
    async with Hub(backend, HubSettings(heartbeat=60)) as hub:
        ids = [await hub.publish("t", f"m{i}") for i in range(3)]
        started = asyncio.Event()
        task = asyncio.create_task(collect(hub, "t", 2, "zzzzzzzz-5", started))
        await started.wait()
        live = await hub.publish("t", "live")
        got = await task
        assert got[0][0] == "reset"
        assert json.loads(got[0][2]) == {"reason": "foreign", "latest_id": ids[-1]}
        assert got[1] == ("message", live, "live")


async def test_an_ephemeral_event_keeps_its_place_among_stored_ones(backend: SqliteBackend) -> None:
    """ "bob is typing" then bob's message: the typing must not arrive after the message."""
    async with Hub(backend, HubSettings(heartbeat=60)) as hub:
        started = asyncio.Event()
        task = asyncio.create_task(collect(hub, "t", 5, None, started))
        await started.wait()
        for _ in range(2):
            await hub.publish("t", "typing", "typing", ephemeral=True)
            await hub.publish("t", "message", "message")
        await hub.publish("t", "typing", "typing", ephemeral=True)
        got = await task
        assert [e for e, _, _ in got] == ["typing", "message", "typing", "message", "typing"]
