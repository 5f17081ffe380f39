"""Server-to-client requests over SSE + POST (``shared.correlation`` behind ``/bidi/``).

The server runs under a real uvicorn *in the test's own event loop* (``serving``), so a test can
reach the app's ``Correlator`` directly (to cancel a request) while clients talk to it over
loopback sockets. ``Peer`` is a hand-driven client: it shows exactly what the stream carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared import Hub
from shared.correlation import (
    AnswerRejected,
    ClientGone,
    Correlator,
    RequestCancelled,
    RequestTimeout,
    UnknownClient,
)
from shared.jsonrpc import RemoteError
from showcase import bidi
from tests.shared.correlation_helpers import Peer, serving, trigger


@contextlib.asynccontextmanager
async def bidi_server(grace: float = 30.0) -> AsyncIterator[tuple[str, httpx.AsyncClient, Correlator]]:
    app = bidi.create_app(grace=grace)
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=50)
    async with serving(app) as base, httpx.AsyncClient(timeout=10, limits=limits) as http:
        yield base, http, app.state.correlator


async def connected(http: httpx.AsyncClient, base: str) -> dict[str, bool]:
    return {c["client_id"]: c["connected"] for c in (await http.get(base + "/bidi/clients")).json()}


async def wait_for(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# -- correlation by id ---------------------------------------------------------------------------


async def test_100_concurrent_triggers_to_10_clients_answered_out_of_order_each_get_their_own() -> None:
    rng = random.Random(42)
    async with bidi_server() as (base, http, correlator):
        peers = [await Peer(http, base, f"peer-{i}").connect() for i in range(10)]
        order: dict[str, list[int]] = {}

        async def answer_shuffled(peer: Peer) -> None:
            got = [(await peer.next("request")).json() for _ in range(10)]
            rng.shuffle(got)
            order[peer.client_id] = [g["params"]["n"] for g in got]
            for msg in got:
                await asyncio.sleep(rng.uniform(0, 0.02))
                r = await peer.answer(msg["id"], {"n": msg["params"]["n"], "by": peer.client_id})
                assert r.status_code == 200, r.text

        answering = [asyncio.create_task(answer_shuffled(p)) for p in peers]
        triggers = [trigger(http, base, f"peer-{n % 10}", {"n": n}, timeout_s=20) for n in range(100)]
        responses = await asyncio.gather(*triggers)
        await asyncio.gather(*answering)

        for n, r in enumerate(responses):
            assert r.status_code == 200, r.text
            assert r.json()["result"] == {"n": n, "by": f"peer-{n % 10}"}
        # The answers really came back in another order than the requests went out.
        assert any(seq != sorted(seq) for seq in order.values())
        assert correlator.stats()["pending"] == 0
        for p in peers:
            await p.close()


async def test_timeout_cancels_on_the_client_and_a_late_answer_is_409() -> None:
    async with bidi_server() as (base, http, _):
        peer = await Peer(http, base, "slow").connect()
        began = time.monotonic()
        r = await trigger(http, base, "slow", {"x": 1}, timeout_s=0.3)
        assert r.status_code == 504
        assert "did not answer" in r.json()["detail"]
        assert time.monotonic() - began < 5
        req = (await peer.next("request")).json()
        assert req["jsonrpc"] == "2.0"
        assert req["method"] == "analyze"
        assert req["params"] == {"x": 1}
        assert req["deadline"] == pytest.approx(time.time(), abs=5)
        cancel = (await peer.next("cancel")).json()
        assert cancel == {"id": req["id"], "reason": "timeout"}
        late = await peer.answer(req["id"], "too late")
        assert late.status_code == 409
        assert "timed out" in late.json()["detail"]
        await peer.close()


async def test_the_server_can_cancel_a_pending_request() -> None:
    async with bidi_server() as (base, http, correlator):
        peer = await Peer(http, base, "c1").connect()
        pending = asyncio.create_task(trigger(http, base, "c1", {"x": 1}, timeout_s=20))
        req = (await peer.next("request")).json()
        assert await correlator.cancel(req["id"], "operator said stop")
        assert not await correlator.cancel(req["id"])  # only once
        r = await pending
        assert r.status_code == 409
        assert "operator said stop" in r.json()["detail"]
        assert (await peer.next("cancel")).json() == {"id": req["id"], "reason": "operator said stop"}
        assert (await peer.answer(req["id"], 1)).status_code == 409

        # In process: the waiter gets the typed error.
        waiter = asyncio.create_task(correlator.request("c1", "m"))
        rid = (await peer.next("request")).json()["id"]
        await correlator.cancel(rid)
        with pytest.raises(RequestCancelled):
            await waiter
        await peer.close()


async def test_client_gone_after_the_grace_period_fails_its_requests_at_once() -> None:
    async with bidi_server(grace=0.3) as (base, http, correlator):
        peer = await Peer(http, base, "leaver").connect()
        pending = asyncio.create_task(trigger(http, base, "leaver", {"x": 1}, timeout_s=20))
        await peer.next("request")
        began = time.monotonic()
        await peer.close()
        r = await pending
        assert r.status_code == 410
        assert "did not come back" in r.json()["detail"]
        assert time.monotonic() - began < 5  # long before the request's own 20 s deadline
        assert "leaver" not in await connected(http, base)
        assert (await trigger(http, base, "leaver", {})).status_code == 404
        with pytest.raises(UnknownClient):
            await correlator.request("leaver", "m")


async def test_requests_sent_while_away_are_delivered_on_reconnect() -> None:
    async with bidi_server(grace=10) as (base, http, _):
        first = await Peer(http, base, "phone").connect()
        await first.close()

        async def away() -> bool:
            return (await connected(http, base)).get("phone") is False

        await wait_for(away)
        pending = asyncio.create_task(trigger(http, base, "phone", {"q": "still there?"}, timeout_s=20))
        await asyncio.sleep(0.2)
        assert not pending.done()
        # Back with its id and token (as a browser would: query parameters).
        again = await Peer(http, base, "phone", first.token, via="query").connect()
        assert again.token == first.token
        req = (await again.next("request")).json()
        assert req["params"] == {"q": "still there?"}
        assert (await again.answer(req["id"], "yes")).status_code == 200
        r = await pending
        assert r.status_code == 200
        assert r.json()["result"] == "yes"
        await again.close()


async def test_a_trigger_still_waiting_when_the_server_stops_gets_503_at_once() -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        async with serving(bidi.create_app()) as base:
            peer = await Peer(http, base, "p").connect()
            pending = asyncio.create_task(trigger(http, base, "p", {}, timeout_s=20))
            await peer.next("request")
            began = time.monotonic()
        r = await pending
        assert r.status_code == 503  # not a 500 when uvicorn stops waiting for the request
        assert r.json()["detail"] == "the server is shutting down"
        assert time.monotonic() - began < 1.5  # uvicorn's graceful timeout (2 s) never came into play
        shutdown = await peer.next()
        assert shutdown.event == "shutdown"
        await peer.close()


# -- sessions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["header", "query"])
async def test_reconnect_with_token_takes_over_and_the_old_stream_ends_with_replaced(via: str) -> None:
    async with bidi_server() as (base, http, _):
        old = await Peer(http, base, "laptop").connect()
        new = await Peer(http, base, "laptop", old.token, via=via).connect()
        assert (new.client_id, new.token) == ("laptop", old.token)
        replaced = await old.next()
        assert replaced.event == "replaced"
        assert "took over" in replaced.json()["reason"]
        await asyncio.wait_for(old.ended.wait(), 5)
        assert await connected(http, base) == {"laptop": True}
        # Requests now reach the new stream.
        pending = asyncio.create_task(trigger(http, base, "laptop", {}, timeout_s=10))
        req = (await new.next("request")).json()
        assert (await new.answer(req["id"], "from the new stream")).status_code == 200
        assert (await pending).json()["result"] == "from the new stream"
        await new.close()


async def test_someone_elses_client_id_is_refused() -> None:
    async with bidi_server() as (base, http, _):
        owner = await Peer(http, base, "taken").connect()
        thief = await Peer(http, base, "taken").connect()
        assert thief.status == 409
        assert "in use" in thief.error["detail"]
        forger = await Peer(http, base, "taken", "not-the-token").connect()
        assert forger.status == 403
        assert "wrong session token" in forger.error["detail"]
        bad = await Peer(http, base, "no spaces allowed").connect()
        assert bad.status == 400
        assert owner.opened.is_set()
        assert not owner.ended.is_set()
        await owner.close()


# -- answers that reach no waiter ---------------------------------------------------------------


async def test_answers_that_reach_no_waiter_get_clear_4xx() -> None:
    async with bidi_server() as (base, http, _):
        alice = await Peer(http, base, "alice").connect()
        mallory = await Peer(http, base, "mallory").connect()
        pending = asyncio.create_task(trigger(http, base, "alice", {"pay": 10}, timeout_s=20))
        rid = (await alice.next("request")).json()["id"]

        spoofed = await mallory.answer(rid, "pay mallory instead")
        assert spoofed.status_code == 403
        assert "another client" in spoofed.json()["detail"]
        no_token = await http.post(base + "/bidi/respond", json={"jsonrpc": "2.0", "id": rid, "result": 1})
        assert no_token.status_code == 403
        assert not pending.done()  # neither reached the waiter

        assert (await alice.answer(rid, "ok")).status_code == 200
        assert (await pending).json()["result"] == "ok"
        duplicate = await alice.answer(rid, "ok again")
        assert duplicate.status_code == 409
        assert "already closed (answered)" in duplicate.json()["detail"]

        unknown = await alice.answer("0" * 32, "?")
        assert unknown.status_code == 404
        assert "no request with id" in unknown.json()["detail"]

        auth = {"Authorization": f"Bearer {alice.token}"}
        for body, words in [
            (b"{not json", "JSON-RPC 2.0 response"),
            (b"[]", "batches are not accepted"),
            (b'{"jsonrpc": "1.0", "id": "x", "result": 1}', '"jsonrpc" must be exactly "2.0"'),
            (b'{"jsonrpc": "2.0", "result": 1}', 'needs the "id"'),
            (b'{"jsonrpc": "2.0", "id": "x", "result": 1, "error": {}}', "exactly one of"),
            (b'{"jsonrpc": "2.0", "id": "x", "error": {"code": "x", "message": "m"}}', "must be an integer"),
        ]:
            r = await http.post(
                base + "/bidi/respond", content=body, headers={**auth, "Content-Type": "application/json"}
            )
            assert r.status_code == 400, body
            assert words in r.json()["detail"]

        cross = await http.post(
            base + "/bidi/respond",
            json={"jsonrpc": "2.0", "id": rid, "result": 1},
            headers={**auth, "Origin": "http://evil.example"},
        )
        assert cross.status_code == 403
        await alice.close()
        await mallory.close()


async def test_error_answers_and_trigger_input_errors() -> None:
    async with bidi_server() as (base, http, _):
        peer = await Peer(http, base, "e").connect()
        pending = asyncio.create_task(trigger(http, base, "e", {}, method="divide", timeout_s=10))
        rid = (await peer.next("request")).json()["id"]
        r = await peer.answer(rid, error={"code": -32603, "message": "division by zero", "data": {"line": 3}})
        assert r.status_code == 200
        failed = await pending
        assert failed.status_code == 502
        assert failed.json()["extra"] == {"code": -32603, "message": "division by zero", "data": {"line": 3}}

        assert (await trigger(http, base, "nobody", {})).status_code == 404
        assert (await trigger(http, base, "e", {}, timeout_s=0)).status_code == 400
        assert (await trigger(http, base, "e", {}, method="")).status_code == 400
        await peer.close()


# -- the pending table --------------------------------------------------------------------------


async def test_no_leak_after_10000_requests_that_time_out_fail_or_are_answered_late() -> None:
    async with Hub() as hub:
        correlator = Correlator(hub, remember=2000)
        await correlator.start()
        sessions = [correlator.open_session(f"c{i}", None) for i in range(10)]
        outcomes: Counter[str] = Counter()
        rejected: Counter[int] = Counter()

        def reject(token: str, body: dict[str, Any]) -> None:
            with pytest.raises(AnswerRejected) as info:
                correlator.answer(token, body)
            rejected[info.value.status_code] += 1

        async def one(n: int) -> None:
            session = sessions[n % 10]
            kind = n % 5
            waiter = asyncio.create_task(
                correlator.request(session.client_id, "m", {"n": n}, timeout=0.02 if kind == 0 else 10)
            )
            await asyncio.sleep(0)  # the request is now in the pending table
            (rid,) = [r for r, p in session.pending.items() if p.message["params"]["n"] == n]
            ok = {"jsonrpc": "2.0", "id": rid, "result": n}
            if kind == 1:  # answered with an error
                correlator.answer(session.token, {"jsonrpc": "2.0", "id": rid, "error": {"code": 1, "message": "no"}})
            elif kind == 2:  # answered, then answered again
                correlator.answer(session.token, ok)
            elif kind == 3:
                await correlator.cancel(rid)
            elif kind == 4:  # answered by someone else (refused), then by the owner
                reject(sessions[(n + 1) % 10].token, ok)
                correlator.answer(session.token, ok)
            try:
                assert await waiter == n
                outcomes["answered"] += 1
            except RequestTimeout:
                outcomes["timed out"] += 1
            except RemoteError:
                outcomes["failed"] += 1
            except RequestCancelled:
                outcomes["cancelled"] += 1
            if kind in (0, 2, 3):
                reject(session.token, ok)  # late / duplicate: 409

        for batch in range(10):  # 1,000 at a time: 100 per client, the per-client cap
            await asyncio.gather(*(one(batch * 1000 + i) for i in range(1000)))

        # And a last batch still pending when the server shuts down: each fails as client gone.
        last = [asyncio.create_task(correlator.request(s.client_id, "m", timeout=10)) for s in sessions]
        await asyncio.sleep(0)
        await correlator.close()
        for task in last:
            with pytest.raises(ClientGone):
                await task

        assert outcomes == {"answered": 4000, "timed out": 2000, "failed": 2000, "cancelled": 2000}
        assert rejected == {403: 2000, 409: 6000}
        assert correlator.stats() == {"sessions": 0, "pending": 0}
        assert all(not s.pending for s in sessions)
        assert len(correlator._finished) == 2000  # bounded by `remember`, not by traffic


async def test_an_answer_racing_the_timeout_is_refused_not_swallowed() -> None:
    """An answer that arrives while the timed-out waiter is still telling the client to cancel must
    get 409: answering "delivered" to a waiter that already gave up would lose it silently."""
    async with Hub() as hub:
        correlator = Correlator(hub)
        session = correlator.open_session("racer", None)
        statuses: list[int] = []

        async def send_cancel(s: Any, rid: str, reason: str) -> None:
            with pytest.raises(AnswerRejected) as info:
                correlator.answer(session.token, {"jsonrpc": "2.0", "id": rid, "result": "just in time?"})
            statuses.append(info.value.status_code)
            assert "timed out" in str(info.value.detail)

        correlator._send_cancel = send_cancel  # type: ignore[method-assign,assignment]
        with pytest.raises(RequestTimeout):
            await correlator.request("racer", "m", timeout=0.01)
        assert statuses == [409]
        assert correlator.stats()["pending"] == 0


async def test_sessions_are_capped() -> None:
    """Each session is kept for the grace period; past the cap a new one is refused with 429."""
    from shared import Hub
    from shared.correlation import Correlator
    from shared.problems import TooMany

    async with Hub() as hub:
        correlator = Correlator(hub, max_sessions=3, grace=5)
        for i in range(3):
            correlator.open_session(f"c{i}", None)
        assert correlator.has_session("c1")
        with pytest.raises(TooMany) as refused:
            correlator.open_session("c3", None)
        assert refused.value.status_code == 429
        assert "too many client sessions" in refused.value.detail
        await correlator.close()


# -- notifications --------------------------------------------------------------------------------


async def test_a_notification_reaches_the_client_with_no_id_and_needs_no_answer() -> None:
    async with bidi_server() as (base, http, correlator):
        peer = await Peer(http, base, "told").connect()
        await correlator.notify("told", "progress", {"done": 3})
        sse = await peer.next("notification")
        assert sse.json() == {"jsonrpc": "2.0", "method": "progress", "params": {"done": 3}}
        assert sse.id == ""  # ephemeral: never replayed, nothing to answer
        assert correlator.stats()["pending"] == 0
        with pytest.raises(UnknownClient, match="'nobody'"):
            await correlator.notify("nobody", "progress")
        await peer.close()
