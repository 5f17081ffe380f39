"""``python -m bench.peers.starlette_peer``: sse-starlette serving the bench's contract.

Written the way sse-starlette's README does it: an ``EventSourceResponse`` over an async generator
that waits on the subscriber's own ``asyncio.Queue``. The publisher encodes each event's JSON once
and puts the same string in every queue (what a careful user does); sse-starlette then frames it
per subscriber, one write per event. Same uvicorn (uvloop + httptools, one worker) as ours.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.contract import due, pace, payload, process_stats
from bench.load import raise_nofile


class State:
    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[dict[str, str]]] = set()
        self.seq = 0


STATE = State()


async def events(request: Request) -> EventSourceResponse:
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    STATE.queues.add(queue)

    async def gen() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                yield await queue.get()
        finally:
            STATE.queues.discard(queue)

    return EventSourceResponse(gen())


async def publish(request: Request) -> JSONResponse:
    try:
        body = await request.json()
        n, size, rate = int(body["n"]), int(body.get("size", 200)), body.get("rate")
        rate = None if rate is None else float(rate)
    except (ValueError, KeyError, TypeError) as exc:
        return JSONResponse({"detail": f"bad body: {exc}"}, status_code=400)
    began, began_wall = time.monotonic(), time.time()
    for i in range(n):
        STATE.seq += 1
        item = {
            "data": json.dumps(payload(STATE.seq, size, due(i, began_wall, rate))),
            "id": str(STATE.seq),
            "event": "tick",
        }
        for queue in STATE.queues:
            queue.put_nowait(item)
        await pace(i, began, rate)
    return JSONResponse({"published": n, "seq": STATE.seq})


async def stats(request: Request) -> JSONResponse:
    return JSONResponse(process_stats(len(STATE.queues), STATE.seq))


def create_app() -> Starlette:
    return Starlette(
        routes=[Route("/events", events), Route("/publish", publish, methods=["POST"]), Route("/stats", stats)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.peers.starlette_peer", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    raise_nofile()
    config: dict[str, Any] = {"loop": "uvloop", "http": "httptools", "backlog": 8192, "access_log": False}
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning", **config)


if __name__ == "__main__":
    main()
