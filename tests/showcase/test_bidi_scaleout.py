"""``/bidi/`` on two instances sharing one Redis: requests and answers cross instances (issue 7).

Two real uvicorn servers (threads), each with its own hub, Redis connections and router, as two
workers or hosts would have. A trigger POSTed to one instance reaches a client streaming from the
other; the client's answer may be POSTed to either and still wakes the waiting trigger.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from shared import Hub
from shared.backends import from_url
from shared.routing import Router
from showcase import bidi
from tests.rig import RedisServer, wait_until
from tests.shared.correlation_helpers import Peer, trigger
from tests.showcase.bidi_helpers import two_instances

pytestmark = pytest.mark.redis


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(timeout=20, limits=limits) as client:
        yield client


async def listed(http: httpx.AsyncClient, base: str) -> dict[str, str | None]:
    return {c["client_id"]: c["instance"] for c in (await http.get(base + "/bidi/clients")).json()}


async def test_a_trigger_reaches_a_client_on_the_other_instance_and_the_answer_may_land_on_either(
    redis_server: RedisServer, http: httpx.AsyncClient
) -> None:
    with two_instances(redis_server) as (a, b):
        on_b = await Peer(http, b.url, "on-b").connect()
        on_a = await Peer(http, a.url, "on-a").connect()
        assert await listed(http, a.url) == {"on-a": "a", "on-b": "b"}
        assert await listed(http, b.url) == {"on-a": "a", "on-b": "b"}

        # Trigger on A, client on B, answer POSTed to A (not B).
        pending = asyncio.create_task(trigger(http, a.url, "on-b", {"q": 1}, timeout_s=15))
        req = (await on_b.next("request")).json()
        assert req["id"].startswith("b.")  # the holder waits; the id says so
        on_b.base = a.url
        assert (await on_b.answer(req["id"], {"from": "on-b"})).status_code == 200
        r = await pending
        assert r.status_code == 200, r.text
        assert r.json()["result"] == {"from": "on-b"}

        # The reverse: trigger on B, client on A, answer POSTed to B.
        pending = asyncio.create_task(trigger(http, b.url, "on-a", {"q": 2}, timeout_s=15))
        req = (await on_a.next("request")).json()
        on_a.base = b.url
        assert (await on_a.answer(req["id"], {"from": "on-a"})).status_code == 200
        assert (await pending).json()["result"] == {"from": "on-a"}

        # 50 concurrent triggers, through both instances, to both clients; answers POSTed to a
        # random instance, out of order: each trigger gets its own answer.
        rng = random.Random(7)
        peers = {"on-a": on_a, "on-b": on_b}

        async def answer_all(peer: Peer) -> None:
            got = [(await peer.next("request", timeout=15)).json() for _ in range(25)]
            rng.shuffle(got)
            for msg in got:
                peer.base = rng.choice([a.url, b.url])
                r = await peer.answer(msg["id"], {"n": msg["params"]["n"], "by": peer.client_id})
                assert r.status_code == 200, r.text

        answering = [asyncio.create_task(answer_all(p)) for p in peers.values()]
        names = ["on-a", "on-b"]
        results = await asyncio.gather(
            *(trigger(http, (a.url, b.url)[n % 3 % 2], names[n % 2], {"n": n}, timeout_s=20) for n in range(50))
        )
        await asyncio.gather(*answering)
        for n, r in enumerate(results):
            assert r.status_code == 200, r.text
            assert r.json()["result"] == {"n": n, "by": names[n % 2]}
        for srv in (a, b):
            assert srv.app.state.correlator.stats()["pending"] == 0
            assert srv.app.state.router.stats()["waiting"] == 0
        await on_a.close()
        await on_b.close()


async def test_answers_through_the_other_instance_are_refused_as_they_would_be_locally(
    redis_server: RedisServer, http: httpx.AsyncClient
) -> None:
    with two_instances(redis_server) as (a, b):
        alice = await Peer(http, b.url, "alice").connect()
        mallory = await Peer(http, a.url, "mallory").connect()
        pending = asyncio.create_task(trigger(http, a.url, "alice", {"pay": 10}, timeout_s=15))
        rid = (await alice.next("request")).json()["id"]

        spoofed = await mallory.answer(rid, "pay mallory instead")  # via A; the request waits on B
        assert spoofed.status_code == 403
        assert "another client" in spoofed.json()["detail"]
        alice.base = a.url
        assert (await alice.answer(rid, "ok")).status_code == 200
        assert (await pending).json()["result"] == "ok"
        for base in (a.url, b.url):
            alice.base = base
            again = await alice.answer(rid, "ok again")
            assert again.status_code == 409
            assert "already closed (answered)" in again.json()["detail"]

        unknown = await alice.answer("b." + "0" * 32, "?")
        assert unknown.status_code == 404
        assert "no request with id" in unknown.json()["detail"]
        nowhere = await alice.answer("no-such-instance." + "0" * 32, "?")
        assert nowhere.status_code == 404
        assert "the instance that sent it is gone" in nowhere.json()["detail"]
        invalid = await http.post(
            a.url + "/bidi/respond", json={"jsonrpc": "1.0", "id": rid}, headers={"Authorization": "Bearer x"}
        )
        assert invalid.status_code == 400

        # Errors of a forwarded request keep their meaning: a timeout is 504 (and the client got
        # its cancel), an error answer 502, an unknown client 404.
        slow = await trigger(http, a.url, "alice", {}, timeout_s=0.3)
        assert slow.status_code == 504
        assert "did not answer" in slow.json()["detail"]
        late = (await alice.next("request")).json()
        assert (await alice.next("cancel")).json() == {"id": late["id"], "reason": "timeout"}
        failing = asyncio.create_task(trigger(http, a.url, "alice", {}, method="divide", timeout_s=15))
        rid = (await alice.next("request")).json()["id"]
        await alice.answer(rid, error={"code": -32603, "message": "division by zero"})
        failed = await failing
        assert failed.status_code == 502
        assert failed.json()["extra"]["message"] == "division by zero"
        assert (await trigger(http, a.url, "nobody", {})).status_code == 404

        # The server side can cancel a request from any instance: A's correlator, B's waiter.
        cancelling = asyncio.create_task(trigger(http, b.url, "alice", {}, timeout_s=15))
        rid = (await alice.next("request")).json()["id"]
        assert rid.startswith("b.")
        assert a.server is not None
        assert a.server.loop is not None
        on_a = asyncio.run_coroutine_threadsafe(a.app.state.correlator.cancel(rid, "operator said stop"), a.server.loop)
        assert await asyncio.wrap_future(on_a) is True
        cancelled = await cancelling
        assert cancelled.status_code == 409
        assert "operator said stop" in cancelled.json()["detail"]
        assert (await alice.next("cancel")).json() == {"id": rid, "reason": "operator said stop"}
        await alice.close()
        await mallory.close()


async def test_a_client_id_held_on_one_instance_needs_its_token_on_the_other_and_then_moves(
    redis_server: RedisServer, http: httpx.AsyncClient
) -> None:
    with two_instances(redis_server) as (a, b):
        owner = await Peer(http, b.url, "taken").connect()
        thief = await Peer(http, a.url, "taken").connect()
        assert thief.status == 409
        assert "in use (on instance 'b')" in thief.error["detail"]
        forger = await Peer(http, a.url, "taken", "not-the-token").connect()
        assert forger.status == 403
        assert "wrong session token" in forger.error["detail"]
        assert not owner.ended.is_set()

        # A request sent while the client is on B, still unanswered when it reconnects to A
        # with its token (a load balancer picked A): A re-sends it, the answer reaches B's waiter.
        pending = asyncio.create_task(trigger(http, a.url, "taken", {"k": 1}, timeout_s=15))
        first = (await owner.next("request")).json()
        moved = await Peer(http, a.url, "taken", owner.token).connect()
        assert moved.token == owner.token
        assert (await owner.next("replaced")).json()["reason"] == "another connection took over this client id"
        assert (await moved.next("request")).json() == first
        assert (await moved.answer(first["id"], "answered after the move")).status_code == 200
        assert (await pending).json()["result"] == "answered after the move"
        assert await listed(http, b.url) == {"taken": "a"}
        # And new requests, from either instance, go to the stream on A.
        for base in (a.url, b.url):
            pending = asyncio.create_task(trigger(http, base, "taken", {"k": 2}, timeout_s=15))
            req = (await moved.next("request")).json()
            assert req["id"].startswith("a.")
            assert (await moved.answer(req["id"], base)).status_code == 200
            assert (await pending).json()["result"] == base
        await owner.close()
        await moved.close()


async def test_when_an_instance_stops_its_clients_reconnect_to_another_and_triggers_work_again(
    redis_server: RedisServer, http: httpx.AsyncClient
) -> None:
    with two_instances(redis_server) as (a, b):
        peer = await Peer(http, b.url, "roamer").connect()
        pending = asyncio.create_task(trigger(http, a.url, "roamer", {"q": "still there?"}, timeout_s=15))
        await peer.next("request")
        began = time.monotonic()
        await asyncio.to_thread(b.stop)
        # The trigger waiting on B is told at once, and told to retry (503 + Retry-After).
        r = await asyncio.wait_for(pending, 10)
        assert time.monotonic() - began < 5  # not the trigger's own 15 s deadline
        assert r.status_code == 503, r.text
        assert "shutting down" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
        assert (await peer.next("shutdown")).event == "shutdown"
        # Until the client is back somewhere, it is unknown.
        router: Router = a.app.state.router
        wait_until(lambda: set(router.peers()) == {"a"}, what="A to forget B")
        gone = await trigger(http, a.url, "roamer", {})
        assert gone.status_code == 404
        assert await listed(http, a.url) == {}

        # It reconnects to A (with its old id and token, as a client library would): a new session.
        back = await Peer(http, a.url, "roamer", peer.token).connect()
        assert back.client_id == "roamer"
        pending = asyncio.create_task(trigger(http, a.url, "roamer", {"q": "back?"}, timeout_s=15))
        req = (await back.next("request")).json()
        assert (await back.answer(req["id"], "yes")).status_code == 200
        assert (await pending).json()["result"] == "yes"
        await peer.close()
        await back.close()


async def test_a_request_for_a_client_briefly_away_from_the_other_instance_waits_for_it(
    redis_server: RedisServer, http: httpx.AsyncClient
) -> None:
    with two_instances(redis_server) as (a, b):
        first = await Peer(http, b.url, "phone").connect()
        await first.close()

        async def away() -> bool:
            listing = (await http.get(a.url + "/bidi/clients")).json()
            return [(c["client_id"], c["instance"], c["connected"]) for c in listing] == [("phone", "b", False)]

        deadline = time.monotonic() + 10
        while not await away():
            assert time.monotonic() < deadline, "B did not mark the client away"
            await asyncio.sleep(0.05)
        pending = asyncio.create_task(trigger(http, a.url, "phone", {"q": "still there?"}, timeout_s=15))
        await asyncio.sleep(0.3)
        assert not pending.done()
        again = await Peer(http, b.url, "phone", first.token, via="query").connect()
        req = (await again.next("request")).json()
        assert req["params"] == {"q": "still there?"}
        again.base = a.url
        assert (await again.answer(req["id"], "yes")).status_code == 200
        assert (await pending).json()["result"] == "yes"
        await again.close()


def test_the_app_joins_its_other_instances_when_its_backend_is_shared(redis_server: RedisServer) -> None:
    """What the combined server does: ``create_app(Hub(from_url(url)))``, no router given."""
    shared_app = bidi.create_app(Hub(from_url(redis_server.url)))
    router = shared_app.state.router
    assert isinstance(router, Router)
    assert router.namespace == "bidi"
    assert shared_app.state.correlator.router is router
    alone = bidi.create_app(Hub(from_url("memory://")))
    assert alone.state.router is None
    assert alone.state.correlator.router is None
