"""``/basics/`` on two instances sharing Redis: one ticker for everybody, carried on by the other."""

from __future__ import annotations

import json

import httpx
import pytest

from shared import Hub
from shared.backends import from_url
from showcase import basics
from tests.rig import LiveServer, RedisServer, read_events, wait_until


@pytest.mark.redis
def test_one_count_for_everybody_and_the_survivor_carries_it_on(redis_server: RedisServer) -> None:
    def make() -> object:
        return basics.create_app(Hub(from_url(redis_server.url)), interval=0.2)

    with LiveServer(make) as one, LiveServer(make) as two:
        # Both instances serve the same ticks: one ticker leads, so no number comes twice.
        got = [json.loads(e.data)["n"] for e in read_events(f"{two.url}/basics/events", n=12)]
        assert got == list(range(got[0], got[0] + 12)), got
        # An interval set on one instance is every instance's (the next leader's too).
        reply = httpx.post(f"{one.url}/basics/interval", json={"seconds": 0.1}, headers={"Origin": one.url})
        assert reply.status_code == 200
        wait_until(lambda: httpx.get(f"{two.url}/basics/interval").json() == {"seconds": 0.1}, what="interval")

        last = read_events(f"{one.url}/basics/events", n=1)[0]
        leader = one if min(one.app.state.ticker.router.peers()) == one.app.state.ticker.router.instance else two
        survivor = two if leader is one else one
        leader.stop()
        # The survivor's clients resume where they were, and the count carries on unbroken.
        after = read_events(f"{survivor.url}/basics/events", n=20, headers={"Last-Event-ID": last.id}, timeout=20)
        numbers = [json.loads(e.data)["n"] for e in after if e.event == "tick"]
        assert numbers == list(range(json.loads(last.data)["n"] + 1, json.loads(last.data)["n"] + 21)), numbers
