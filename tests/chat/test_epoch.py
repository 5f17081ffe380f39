"""Redis loses the chat (issue 13.3): a FLUSHALL, or a restart of a Redis that keeps nothing,
under two live chat instances with people reading. Every reader gets ``reset`` (reason
``epoch``) before any new event, no message id names two messages, and rooms, history and
cookies come back the same on every instance, a new one included."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx
import pytest
import redis

from chat import ChatSettings, create_app
from tests.chat.scaleout_helpers import EVENTS, MESSAGES, STORED, instances, on
from tests.chat.stream_helpers import Watch, data
from tests.rig import LiveServer, RedisServer

from .conftest import Person


def wipe(how: str, server: RedisServer) -> None:
    if how == "flushall":
        with redis.Redis.from_url(server.url) as r:
            r.flushall()
    else:
        server.kill()
        server.start()


def next_stored_or_reset(watch: Watch, limit: int = 50) -> str:
    """The name of the next event that is stored or a reset (presence and typing skipped)."""
    for _ in range(limit):
        (sse,) = watch.next()
        if sse.event == "reset" or sse.event in STORED:
            return sse.event if sse.event != "reset" else f"reset:{data(sse)['reason']}"
    raise AssertionError("no stored event or reset")


@pytest.mark.redis
@pytest.mark.parametrize("how", ["flushall", "restart-empty"])
def test_redis_losing_the_chat_resets_every_reader_and_comes_back_consistent(
    redis_server: RedisServer, tmp_path: Path, how: str
) -> None:
    with (
        instances(redis_server.url, tmp_path, ChatSettings()) as (one, two),
        httpx.Client(base_url=one.url, timeout=10) as h1,
        httpx.Client(base_url=two.url, timeout=10) as h2,
    ):
        alice, bob = Person(h1, "alice"), Person(h2, "bob")
        since = alice.get(MESSAGES).json()["latest_event_id"]
        readers = [Watch(one.url, EVENTS, alice, since), Watch(two.url, EVENTS, bob, since)]
        try:
            old = [alice.send("general", f"old {i}", f"o{i}").json() for i in range(3)]
            for w in readers:
                assert [data(w.until("message"))["text"] for _ in old] == ["old 0", "old 1", "old 2"]
            old_event = bob.get(MESSAGES).json()["latest_event_id"]

            wipe(how, redis_server)
            lost = time.monotonic()
            # The rooms come back on both instances, and both cookies still work on both.
            deadline = lost + 15
            while True:
                answers = [on(p, h).get("/chat/rooms") for p in (alice, bob) for h in (h1, h2)]
                if all(r.status_code == 200 and "general" in {x["name"] for x in r.json()["rooms"]} for r in answers):
                    break
                assert all(r.status_code in (200, 503) for r in answers), [r.text for r in answers]
                assert time.monotonic() < deadline, [r.text for r in answers]
                time.sleep(0.1)
            back = time.monotonic() - lost
            sent = alice.send("general", "after", "n0")
            assert sent.status_code == 201, sent.text
            new = sent.json()
            assert new["id"] not in {m["id"] for m in old}
            assert new["id"] > max(m["id"] for m in old)
            # Every live reader: reset (epoch) first, before the new room's events or message.
            firsts = [next_stored_or_reset(w) for w in readers]
            assert firsts == ["reset:epoch", "reset:epoch"]
            # History is the new one, the same on both instances.
            pages = [on(p, h).get(MESSAGES).json()["messages"] for p in (alice, bob) for h in (h1, h2)]
            assert all([m["text"] for m in page] == ["after"] for page in pages), pages
            # An old message id names nothing now (not some other message).
            assert alice.request("PATCH", f"{MESSAGES}/{old[0]['id']}", json={"text": "x"}).status_code == 404
        finally:
            for w in readers:
                w.close()

        # A client resuming with an id of the lost history, on either instance: reset first.
        for base, person in ((one.url, alice), (two.url, bob)):
            w = Watch(base, EVENTS, person, old_event)
            try:
                assert next_stored_or_reset(w).startswith("reset:")
            finally:
                w.close()

        # An instance started after the loss serves the same rooms, history and cookies.
        with contextlib.ExitStack() as stack:
            three = LiveServer(lambda: create_app(tmp_path / "three", backend=redis_server.url)).start()
            stack.callback(three.stop)
            h3 = stack.enter_context(httpx.Client(base_url=three.url, timeout=10))
            for p in (alice, bob):
                rooms = on(p, h3).get("/chat/rooms")
                assert rooms.status_code == 200, rooms.text
                assert "general" in {x["name"] for x in rooms.json()["rooms"]}
                assert [m["text"] for m in on(p, h3).get(MESSAGES).json()["messages"]] == ["after"]
            carol = Person(h3, "carol")
            assert on(carol, h1).get("/chat/rooms").status_code == 200  # its cookies work on the others
        print(f"\n{how}: rooms and cookies back on both instances {back:.2f} s after the loss")
