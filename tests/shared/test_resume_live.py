"""Resuming while another subscriber keeps the topic live: the resume is served from the hub's
shared log, and must replay exactly the stored events missed, never the ephemeral ones
(typing, metrics frames) published while the client was away. Issue 13, part 2."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared import Hub
from shared.backends import Backend, MemoryBackend
from shared.backends.redis import RedisBackend
from tests.rig import RedisServer
from tests.shared.backends.helpers import Subscriber


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    yield RedisBackend.from_url(f"{server.url}?prefix=resume:")


async def test_resume_on_a_live_topic_skips_what_was_ephemeral(backend: Backend) -> None:
    async with Hub(backend) as hub:
        keeper = await Subscriber(hub, "room").started()  # keeps the topic's shared log alive
        try:
            first = await hub.publish("room", "hello", event="message")
            await keeper.until(1)
            # The client that will resume has read `first`, then goes away. Meanwhile:
            await hub.publish("room", "alice is typing", event="typing", ephemeral=True)
            missed = await hub.publish("room", "how are you?", event="message")
            await hub.publish("room", "bob left", event="presence", ephemeral=True)
            await keeper.until(4)
            assert first is not None
            assert missed is not None
            resumed = await Subscriber(hub, "room", first).started()
            try:
                await hub.publish("room", "still typing", event="typing", ephemeral=True)
                live = await hub.publish("room", "live one", event="message")
                events = await resumed.until(3)
            finally:
                await resumed.stop()
            # The stored event it missed, then what came after it subscribed (ephemeral included).
            # (The parser keeps the last id on an id-less event, as a browser's lastEventId does.)
            assert events == [
                ("message", missed, "how are you?"),
                ("typing", missed, "still typing"),
                ("message", live, "live one"),
            ]
            await keeper.until(6)
            assert [e for e, _, _ in keeper.events] == ["message", "typing", "message", "presence", "typing", "message"]
        finally:
            await keeper.stop()
