"""The hub in-process: ordering, replay, reset, slow consumers, cleanup, shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared import Hub, HubSettings, MemoryBackend
from shared.backends import Entry
from shared.decoder import Decoder


async def collect(
    hub: Hub, topic: str, n: int, last_id: str | None = None, started: asyncio.Event | None = None, limit: float = 10
) -> list[tuple[str, str | None, str]]:
    """Subscribe and return (event, id, data) of the next ``n`` events."""
    parser = Decoder()
    out: list[tuple[str, str | None, str]] = []

    async def run() -> None:
        async with hub.subscribe(topic, last_id) as sub:
            if started is not None:
                started.set()
            async for chunk in sub:
                out.extend((e.event, e.id, e.data) for e in parser.feed(chunk))
                if len(out) >= n:
                    return

    await asyncio.wait_for(run(), limit)
    return out


async def test_every_subscriber_gets_every_event_in_order() -> None:
    async with Hub() as hub:
        n_subs, n_events = 1000, 50
        ready = [asyncio.Event() for _ in range(n_subs)]
        tasks = [asyncio.create_task(collect(hub, "t", n_events, started=ready[i])) for i in range(n_subs)]
        await asyncio.gather(*(r.wait() for r in ready))
        ids = [await hub.publish_json("t", {"i": i}, event="e") for i in range(n_events)]
        results = await asyncio.gather(*tasks)
        for got in results:
            assert [json.loads(d)["i"] for _, _, d in got] == list(range(n_events))
            assert [i for _, i, _ in got] == ids
        assert hub.stats() == {"topics": 0, "subscribers": 0}


async def test_resume_returns_exactly_the_missed_events() -> None:
    async with Hub() as hub:
        ids = [await hub.publish("t", f"m{i}") for i in range(10)]
        got = await collect(hub, "t", 6, last_id=ids[3])
        # 6 missed events exist (ids 4..9): exactly those, in order, once.
        assert [d for _, _, d in got] == [f"m{i}" for i in range(4, 10)]
        assert [i for _, i, _ in got] == ids[4:]


async def test_resume_then_live_has_no_gap_or_duplicate() -> None:
    async with Hub() as hub:
        ids = [await hub.publish("t", f"m{i}") for i in range(5)]
        started = asyncio.Event()
        task = asyncio.create_task(collect(hub, "t", 7, last_id=ids[1], started=started))
        await started.wait()
        for i in range(5, 9):
            await hub.publish("t", f"m{i}")
        got = await task
        assert [d for _, _, d in got] == [f"m{i}" for i in range(2, 9)]


async def test_resume_from_the_shared_log_of_a_busy_topic() -> None:
    """Ids still in the in-process log are served from it (no backend read), same result."""
    async with Hub() as hub:
        started = asyncio.Event()
        keeper = asyncio.create_task(collect(hub, "t", 20, started=started))  # keeps the topic's log alive
        await started.wait()
        ids = [await hub.publish("t", f"m{i}") for i in range(20)]
        await keeper
        second = asyncio.Event()
        holder = asyncio.create_task(collect(hub, "t", 1, started=second))
        await second.wait()
        got = await collect(hub, "t", 10, last_id=ids[9])
        await hub.publish("t", "end")
        await holder
        assert [d for _, _, d in got] == [f"m{i}" for i in range(10, 20)]


@pytest.mark.parametrize(
    ("make_id", "reason"),
    [
        (lambda ids: "zzzzzz-1", "foreign"),  # another run of the server
        (lambda ids: "not-an-id-at-all", "unknown"),
        (lambda ids: ids[0].split("-")[0] + "-999", "unknown"),  # from the future
        (lambda ids: ids[0], "evicted"),  # fell out of the replay window
    ],
)
async def test_unresumable_ids_give_one_reset(make_id: object, reason: str) -> None:
    async with Hub(MemoryBackend(max_events=5)) as hub:
        ids = [await hub.publish("t", f"m{i}") for i in range(10)]
        started = asyncio.Event()
        task = asyncio.create_task(collect(hub, "t", 2, last_id=make_id(ids), started=started))  # type: ignore[operator]
        await started.wait()
        live = await hub.publish("t", "live")
        got = await task
        assert got[0][0] == "reset"
        assert json.loads(got[0][2]) == {"reason": reason, "latest_id": ids[-1]}
        assert got[0][1] == ids[-1]  # the client's Last-Event-ID moves to the latest
        assert got[1] == ("message", live, "live")


async def test_a_reset_on_an_empty_topic_carries_an_id_to_resume_from() -> None:
    """Issue 16: after a restart the topic has no events yet; the reset still moves the client's
    Last-Event-ID (to the topic's origin), so the next connection resumes instead of getting the
    same reset again, and nothing published meanwhile is missed."""
    async with Hub() as hub:
        (got,) = await collect(hub, "t", 1, last_id="zzzzzz-7")
        assert got[0] == "reset"
        assert json.loads(got[2]) == {"reason": "foreign", "latest_id": None}
        origin = got[1]
        assert origin == await hub.backend.origin_id("t")
        first = await hub.publish("t", "first")  # while the client is away
        (again,) = await collect(hub, "t", 1, last_id=origin)
        assert again == ("message", first, "first")


async def test_ephemeral_events_have_no_id_and_are_not_replayed() -> None:
    async with Hub() as hub:
        first = await hub.publish("t", "kept")
        assert await hub.publish("t", "typing", event="typing", ephemeral=True) is None
        started = asyncio.Event()
        task = asyncio.create_task(collect(hub, "t", 2, last_id=first, started=started))
        await started.wait()
        await hub.publish("t", "typing-now", event="typing", ephemeral=True)
        await hub.publish("t", "after")
        events = await task
        # The typing event sent before this subscriber came is not replayed; the live one arrives.
        assert [(e, i, d) for e, i, d in events] == [("typing", None, "typing-now"), ("message", events[1][1], "after")]
        assert events[1][1] != ""


async def test_a_stalled_reader_is_ended_without_delaying_others() -> None:
    settings = HubSettings(window=50)
    async with Hub(settings=settings) as hub:
        async with hub.subscribe("t") as stalled:
            it = stalled.__aiter__()
            await hub.publish("t", "first")
            assert b"first" in await anext(it)
            # The stalled subscriber stops reading; a healthy one keeps up with 500 events.
            started = asyncio.Event()
            healthy = asyncio.create_task(collect(hub, "t", 500, started=started))
            await started.wait()
            for i in range(500):
                await hub.publish("t", f"m{i}")
                if i % 10 == 0:
                    await asyncio.sleep(0)  # a publisher that lets the loop run (as HTTP requests do)
            got = await asyncio.wait_for(healthy, 5)
            assert [d for _, _, d in got] == [f"m{i}" for i in range(500)]
            # The stalled one, reading again, finds itself ended: it must resume by Last-Event-ID.
            with pytest.raises(StopAsyncIteration):
                await anext(it)
            assert stalled.ended_reason == "slow"
            assert stalled.last_id is not None
        assert hub.stats()["subscribers"] == 0


async def test_cancelled_subscriber_does_not_cancel_the_others() -> None:
    async with Hub() as hub:
        started = [asyncio.Event() for _ in range(3)]
        tasks = [asyncio.create_task(collect(hub, "t", 1, started=s)) for s in started]
        await asyncio.gather(*(s.wait() for s in started))
        await asyncio.sleep(0.01)  # all three are waiting on the shared wake-up now
        tasks[0].cancel()
        await asyncio.sleep(0.01)
        await hub.publish("t", "still here")
        latest = await hub.backend.latest_id("t")
        assert [await t for t in tasks[1:]] == [[("message", latest, "still here")]] * 2
        assert hub.stats() == {"topics": 0, "subscribers": 0}


async def test_heartbeats_come_from_one_ticker() -> None:
    async with Hub(settings=HubSettings(heartbeat=0.05)) as hub, hub.subscribe("t") as sub:
        it = sub.__aiter__()
        chunk = await asyncio.wait_for(anext(it), 1)
        assert chunk == b": ping\n\n"


async def test_close_ends_streams_with_a_shutdown_marker() -> None:
    hub = Hub()
    await hub.start()
    last = await hub.publish("t", "x")
    async with hub.subscribe("t", last) as sub:
        it = sub.__aiter__()
        closer = asyncio.create_task(hub.close())
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(it), 2)
        assert sub.ended_reason == "shutdown"
        await closer
    assert b"event: shutdown" in hub.shutdown_event(last)


class FailingOnce(MemoryBackend):
    """A backend whose first reader fails after its first batch (a lost connection, a bug)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def follow(self, topic: str, after: str | None, deliver: Any) -> None:  # type: ignore[override]
        return None  # read through listen(), which fails below

    async def listen(self, topic: str, after: str | None) -> AsyncIterator[list[Entry]]:
        async for batch in super().listen(topic, after):
            yield batch
            if self.failures == 0:
                self.failures += 1
                raise RuntimeError("event source broke")


async def test_a_failed_reader_ends_its_streams_with_the_reason_and_the_topic_starts_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = FailingOnce()
    async with Hub(backend) as hub:
        first = await hub.publish("t", "a")
        async with hub.subscribe("t", first) as sub:
            await hub.publish("t", "b")
            chunks = [chunk async for chunk in sub]  # ends: the reader failed after "b"
            assert sub.ended_reason == "shutdown"
        assert b"data: b" in b"".join(chunks)
        assert b'"reason": "event source failed; reconnect to resume"' in hub.shutdown_event(sub.last_id)
        assert "reader for topic 't' failed" in caplog.text
        # The client resumes from its last id on a new reader, missing nothing.
        async with hub.subscribe("t", sub.last_id) as again:
            c = await hub.publish("t", "c")
            it = again.__aiter__()
            assert b"data: c" in await asyncio.wait_for(anext(it), 2)
            assert again.last_id == c
    assert b'"reason": "server shutting down"' in hub.shutdown_event(c)


async def test_subscribe_before_start_says_what_to_do() -> None:
    hub = Hub()
    with pytest.raises(RuntimeError, match=r"await hub\.start"):
        async with hub.subscribe("t"):
            pass
