"""A topic's end (``until``), history read in pages, and a notice to one subscriber (issue 17.3).

The hub now carries remote_exec's run output: a run's stream ends at its ``exit`` event, a
late joiner reads the history page by page, and a viewer is told about the run's owner between
two events. These are hub behaviours, tested in-process on the memory backend.
"""

from __future__ import annotations

import asyncio

from shared import Hub, HubSettings
from shared.decoder import Decoder


async def drain(
    hub: Hub, topic: str, last_id: str | None, until: str | None, limit: float = 5
) -> tuple[list[tuple[str, str]], str | None]:
    """(event, data) of everything the subscription delivers until it ends, and why it ended."""
    parser = Decoder()
    out: list[tuple[str, str]] = []

    async def run() -> str | None:
        async with hub.subscribe(topic, last_id, until=until) as sub:
            async for chunk in sub:
                out.extend((e.event, e.data) for e in parser.feed(chunk))
            return sub.ended_reason

    reason = await asyncio.wait_for(run(), limit)
    return out, reason


async def test_a_live_subscriber_ends_right_after_the_final_event() -> None:
    async with Hub() as hub:
        first = await hub.publish("run", "start")
        assert first is not None
        task = asyncio.create_task(drain(hub, "run", first, "exit"))
        await asyncio.sleep(0.05)
        for i in range(3):
            await hub.publish("run", f"out{i}", event="stdout")
        await hub.publish("run", "done", event="exit")
        await hub.publish("run", "after the end", event="stdout")  # never delivered
        events, reason = await task
        assert events == [("stdout", "out0"), ("stdout", "out1"), ("stdout", "out2"), ("exit", "done")]
        assert reason == "end"


async def test_a_late_joiner_gets_the_history_up_to_the_final_event_and_ends() -> None:
    async with Hub() as hub:
        origin = await hub.backend.origin_id("run")
        for i in range(5):
            await hub.publish("run", f"out{i}", event="stdout")
        await hub.publish("run", "done", event="exit")
        await hub.publish("run", "stray", event="stdout")
        events, reason = await drain(hub, "run", origin, "exit")
        assert [d for _, d in events] == ["out0", "out1", "out2", "out3", "out4", "done"]
        assert reason == "end"


async def test_a_resume_further_behind_than_one_page_gets_every_event() -> None:
    # The old hub read one page (replay_limit events) and then went live: the events between the
    # page's end and now were silently skipped.
    async with Hub(settings=HubSettings(replay_limit=5)) as hub:
        origin = await hub.backend.origin_id("t")
        for i in range(23):
            await hub.publish("t", f"m{i}")
        await hub.publish("t", "end", event="exit")
        events, reason = await drain(hub, "t", origin, "exit")
        assert [d for _, d in events] == [f"m{i}" for i in range(23)] + ["end"]
        assert reason == "end"


async def test_paged_history_then_live_has_no_gap_or_duplicate() -> None:
    async with Hub(settings=HubSettings(replay_limit=4)) as hub:
        origin = await hub.backend.origin_id("t")
        for i in range(10):
            await hub.publish("t", f"m{i}")
        task = asyncio.create_task(drain(hub, "t", origin, "exit"))
        for i in range(10, 20):
            await hub.publish("t", f"m{i}")
            await asyncio.sleep(0)
        await hub.publish("t", "end", event="exit")
        events, _ = await task
        assert [d for _, d in events] == [f"m{i}" for i in range(20)] + ["end"]


async def test_push_reaches_one_subscriber_between_two_events() -> None:
    async with Hub() as hub:
        parser_a, parser_b = Decoder(), Decoder()
        async with hub.subscribe("t") as a, hub.subscribe("t") as b:
            await hub.publish("t", "one")
            a.push(b"event: notice\ndata: for a only\n\n")
            await hub.publish("t", "two")
            got_a = [(e.event, e.data) for e in parser_a.feed(a.take() or b"")]
            got_a += [(e.event, e.data) for e in parser_a.feed(a.take() or b"")]
            got_b = [(e.event, e.data) for e in parser_b.feed(b.take() or b"")]
        assert ("notice", "for a only") in got_a
        assert [d for _, d in got_a if _ != "notice"] == ["one", "two"]
        assert got_b == [("message", "one"), ("message", "two")]


async def test_shutdown_ends_an_until_subscription_with_shutdown() -> None:
    hub = Hub()
    await hub.start()
    task = asyncio.create_task(drain(hub, "run", None, "exit"))
    await asyncio.sleep(0.05)
    await hub.publish("run", "x", event="stdout")
    await hub.close()
    events, reason = await task
    assert events == [("stdout", "x")]
    assert reason == "shutdown"


async def test_shutdown_mid_history_ends_the_subscription_at_the_page_it_took() -> None:
    hub = Hub(settings=HubSettings(replay_limit=2))
    await hub.start()
    origin = await hub.backend.origin_id("t")
    for i in range(10):
        await hub.publish("t", f"m{i}")
    parser = Decoder()
    async with hub.subscribe("t", origin) as sub:
        first = [e.data for e in parser.feed(sub.take() or b"")]
        assert first == ["m0", "m1"]
        await hub.close()
        assert sub.take() is None  # no further page is read from a closed backend
        assert sub.ended_reason == "shutdown"
        assert sub.last_id is not None  # the shutdown event carries it: the client resumes there
