"""``python -m bench.server``: the real hub behind a tiny contract any load generator can drive.

- ``GET /events``: events whose data is JSON ``{"seq": int, "t": float, "pad": "..."}`` (``seq``
  counts per publish, ``t`` is the sender's ``time.time()``), with ids; resumable.
- ``POST /publish`` ``{"n": int, "size": int}``: broadcast ``n`` events of about ``size`` bytes
  as fast as it can (yielding to the loop between small batches, as a real publisher does).
- ``GET /stats``: subscribers, RSS, CPU seconds of this process.

``--impl bidi`` serves the ``/bidi/`` demo as users run it, plus ``POST /bench/requests``
``{"client_ids": [...], "seconds": float, "concurrency": int, "rate": float | null}``: the server
sends requests to those connected clients itself (``Correlator.request``, as the apps do: a
dashboard confirmation) for ``seconds``, ``concurrency`` in flight or paced at ``rate`` per
second, and answers with each round trip's time (SSE request out to POST answer in).

``--impl hub`` (default) uses the same code path as the apps (hub, encoding, ``sse_response``).
``--impl naive`` is the tutorial way: a queue per subscriber, ``json.dumps`` per subscriber, and
Litestar's ``ServerSentEvent`` encoding every item — the baseline we compare against.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Request, get, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.response import ServerSentEvent, Stream

from shared.apps import App
from shared.backends import from_url
from shared.correlation import Correlator
from shared.hub import Hub, HubSettings
from shared.responses import last_event_id, sse_response
from shared.server import serve

from .contract import TOPIC, due, pace, payload, process_stats


@dataclass
class PublishBody:
    n: int
    size: int = 200
    rate: float | None = None  # events per second; None = as fast as it can


class Counter:
    def __init__(self) -> None:
        self.seq = 0


def _stats(state: State) -> dict[str, Any]:
    out = process_stats(state.subscribers(), state.counter.seq)
    out["gc_collections"] = [g["collections"] for g in gc.get_stats()]
    return out


@get("/stats")
async def stats(state: State) -> dict[str, Any]:
    return _stats(state)


# -- ours --------------------------------------------------------------------------------------


@get("/events", media_type="text/event-stream")
async def hub_events(request: Request[Any, Any, Any], state: State) -> Stream:
    return sse_response(state.hub, TOPIC, last_id=last_event_id(request))


@post("/publish", status_code=200)
async def hub_publish(data: JSONBody[PublishBody], state: State) -> dict[str, int]:
    hub: Hub = state.hub
    counter: Counter = state.counter
    began, began_wall = time.monotonic(), time.time()
    for i in range(data.n):
        counter.seq += 1
        await hub.publish_json(TOPIC, payload(counter.seq, data.size, due(i, began_wall, data.rate)), event="tick")
        await pace(i, began, data.rate)
    return {"published": data.n, "seq": counter.seq}


def create_hub_app(window: int = 8192, backend: str | None = None) -> App:
    hub = Hub(from_url(backend), settings=HubSettings(window=window))
    state = State({"hub": hub, "counter": Counter()})
    state.subscribers = lambda: hub.stats()["subscribers"]
    return App(
        prefix="",
        settings=None,
        closables=[hub],  # a stop ends the streams with `shutdown` first (docs/app-contract.md)
        route_handlers=[hub_events, hub_publish, stats],
        state=state,
        on_startup=[hub.start],
        openapi_config=None,
    )


# -- the naive baseline ------------------------------------------------------------------------


@get("/events", media_type="text/event-stream")
async def naive_events(state: State) -> ServerSentEvent:
    queues: set[asyncio.Queue[dict[str, Any]]] = state.queues
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    queues.add(queue)

    async def gen() -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                item = await queue.get()
                yield {"data": json.dumps(item), "id": str(item["seq"]), "event": "tick"}
        finally:
            queues.discard(queue)

    return ServerSentEvent(gen())


@post("/publish", status_code=200)
async def naive_publish(data: JSONBody[PublishBody], state: State) -> dict[str, int]:
    counter: Counter = state.counter
    began, began_wall = time.monotonic(), time.time()
    for i in range(data.n):
        counter.seq += 1
        item = payload(counter.seq, data.size, due(i, began_wall, data.rate))
        for queue in state.queues:
            queue.put_nowait(item)
        await pace(i, began, data.rate)
    return {"published": data.n, "seq": counter.seq}


def create_naive_app() -> Litestar:
    queues: set[asyncio.Queue[dict[str, Any]]] = set()
    state = State({"queues": queues, "counter": Counter()})
    state.subscribers = lambda: len(queues)
    return Litestar([naive_events, naive_publish, stats], state=state, openapi_config=None)


@dataclass
class RequestsBody:
    client_ids: list[str]
    seconds: float = 5.0
    concurrency: int = 64
    rate: float | None = None


@post("/bench/requests", status_code=200)
async def bench_requests(data: JSONBody[RequestsBody], state: State) -> dict[str, Any]:
    correlator: Correlator = state.correlator
    ids = data.client_ids
    rtts: list[float] = []
    errors: list[str] = []
    began = time.monotonic()
    end = began + min(data.seconds, 60.0)  # bounded whatever the body says

    async def one(i: int) -> None:
        sent = time.perf_counter()
        try:
            await correlator.request(ids[i % len(ids)], "bench", None, timeout=10)
        except Exception as exc:  # counted, not raised: the run goes on
            errors.append(type(exc).__name__)
        else:
            rtts.append(time.perf_counter() - sent)

    if data.rate is None:

        async def lane(k: int) -> None:
            i = k
            while time.monotonic() < end:
                await one(i)
                i += data.concurrency

        await asyncio.gather(*(lane(k) for k in range(data.concurrency)))
    else:
        in_flight: set[asyncio.Task[None]] = set()
        n = 0
        while time.monotonic() < end:
            await asyncio.sleep(max(0.0, began + n / data.rate - time.monotonic()))
            if len(in_flight) >= data.concurrency:
                errors.append("over concurrency")  # the schedule needed more in flight: a miss
            else:
                task = asyncio.create_task(one(n))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            n += 1
        await asyncio.gather(*in_flight)
    return {"rtts": rtts, "errors": errors, "seconds": time.monotonic() - began}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--impl", choices=["hub", "naive", "bidi"], default="hub")
    parser.add_argument("--window", type=int, default=8192, help="hub: how far a subscriber may lag (events)")
    parser.add_argument("--backend", help="hub: a backend URL (memory:// by default, redis://host:port/db)")
    args = parser.parse_args()
    app: Any
    if args.impl == "bidi":
        from showcase import bidi  # the /bidi/ demo, as users run it

        app = bidi.create_app()
        app.register(bench_requests)
    else:
        app = create_hub_app(args.window, args.backend) if args.impl == "hub" else create_naive_app()
    serve(app, args.host, args.port, log_level="warning", backlog=8192)


if __name__ == "__main__":
    main()
