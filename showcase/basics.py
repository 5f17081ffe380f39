"""``/basics/``: the plain one-way pattern. A ticker publishes numbered events; pages watch them.

- ``GET /basics/events``: live ticks from the shared hub, resumable with Last-Event-ID.
- ``GET /basics/events?count=N``: the seed's "N messages" server: N events with ids 1..N, one per
  interval, then the response ends; a client that reconnects with Last-Event-ID gets the rest,
  and one that resumes from the last of them gets 204 No Content: the WHATWG way to tell an
  EventSource to stop reconnecting (it would otherwise fetch ``done`` again every second).
- ``POST /basics/interval`` ``{"seconds": s}``: change the ticker's interval for everybody.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery, JSONBody
from litestar.response import Response

from shared.apps import App, app_defaults
from shared.backends import BackendUnavailable
from shared.encoding import encode, encode_json
from shared.errors import errors
from shared.health import health_routes
from shared.hub import Hub
from shared.pages import page_route, static_router
from shared.responses import SSE_HEADERS, SSEStream, last_event_id, sse_response
from shared.routing import Router

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"
TOPIC = "ticks"
MAX_BODY = 16 * 1024  # the one body here is {"seconds": s}


@dataclass(slots=True)
class Ticker:
    """One ticker for everybody. With several instances (workers or hosts on one Redis) they all
    run one, but only the leader (the smallest live instance id) publishes; the others follow the
    count, so a new leader carries on where the old one stopped."""

    hub: Hub
    router: Router
    interval: float = 1.0
    seq: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    changed: asyncio.Event | None = None
    since: float = 0.0

    async def start(self) -> None:
        self.changed = asyncio.Event()
        self.since = time.monotonic()
        self.router.handle("basics.interval", self._interval_from_peer)
        self.tasks = [
            asyncio.create_task(self._run(), name="basics-ticker"),
            asyncio.create_task(self._follow(), name="basics-follow"),
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def leads(self) -> bool:
        if self.router.alone:
            return True
        # Wait to hear from the others before claiming the lead, or a starting instance would
        # tick alongside the leader for a moment.
        settled = time.monotonic() - self.since > 1.5 * self.router.beat
        return settled and min(self.router.peers()) == self.router.instance

    async def _interval_from_peer(self, seconds: Any) -> float:
        self.set_interval(float(seconds))
        return self.interval

    async def _follow(self) -> None:
        """Keep ``seq`` at the newest published tick, whoever published it."""
        async for batch in self.hub.backend.listen(TOPIC, None):
            for entry in batch:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    self.seq = max(self.seq, int(json.loads(entry.data)["n"]))

    def set_interval(self, seconds: float) -> None:
        self.interval = seconds
        if self.changed is not None:
            self.changed.set()  # apply at once, not after the old (maybe long) interval

    async def _run(self) -> None:
        assert self.changed is not None
        while True:
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), self.interval)
                continue
            if self.leads():
                self.seq += 1
                with contextlib.suppress(BackendUnavailable):  # skip a tick while Redis is away
                    # ``every``: the interval now, so every page shows a change another viewer made.
                    tick = {"n": self.seq, "t": time.time(), "every": self.interval}
                    await self.hub.publish_json(TOPIC, tick, event="tick")


def _ticker(state: State) -> Ticker:
    ticker: Ticker = state.ticker
    return ticker


page = page_route("/basics", STATIC / "basics.html", "demo page")


@get(
    "/basics/events",
    media_type="text/event-stream",
    raises=errors(429, 503),
    responses={204: ResponseSpec(None, description="with count: Last-Event-ID is the last event, nothing more comes")},
)
async def events(
    request: Request[Any, Any, Any],
    state: State,
    count: FromQuery[int | None] = None,
    interval: FromQuery[float | None] = None,
) -> Response[Any]:
    """Live ticks (resumable), or with ``count`` a finite stream of ``count`` numbered events."""
    if count is None:
        return sse_response(state.hub, TOPIC, last_id=last_event_id(request))
    if not 1 <= count <= 10_000:
        raise ValidationException("count must be between 1 and 10000")
    pace = interval if interval is not None else 0.2
    if not 0 <= pace <= 10:
        raise ValidationException("interval must be between 0 and 10 seconds")
    start = 0
    resume = last_event_id(request)
    if resume is not None:
        if not resume.isdigit():
            raise ValidationException("Last-Event-ID must be a number for a counted stream")
        start = int(resume)
        if start >= count:
            # Everything was delivered: an EventSource that gets 204 closes for good (WHATWG
            # HTML, "reestablish the connection" is not run for a 204).
            return Response(content=b"", status_code=204, headers=SSE_HEADERS)
    # SSEStream, like sse_response: the per-client cap and the stuck-write timeout apply here too.
    return SSEStream(state.hub, _counted(start, count, pace))


async def _counted(start: int, count: int, pace: float) -> AsyncIterator[bytes]:
    yield encode(retry=1000)
    for n in range(start + 1, count + 1):
        yield encode_json({"n": n, "of": count, "t": time.time()}, event="tick", id=str(n))
        if n < count:
            await asyncio.sleep(pace)
    yield encode(json.dumps({"sent": count}), event="done")


class IntervalBody(msgspec.Struct, forbid_unknown_fields=True):
    seconds: float


@post("/basics/interval", status_code=200, raises=errors(403, 413))
async def set_interval(data: JSONBody[IntervalBody], state: State) -> dict[str, float]:
    """Change how often the shared ticker publishes (0.05 to 60 seconds)."""
    if not 0.05 <= data.seconds <= 60:
        raise ValidationException("seconds must be between 0.05 and 60")
    ticker = _ticker(state)
    ticker.set_interval(data.seconds)
    await ticker.router.call_all("basics.interval", data.seconds)  # every instance, for the next leader
    return {"seconds": data.seconds}


@get("/basics/interval")
async def get_interval(state: State) -> dict[str, float]:
    return {"seconds": _ticker(state).interval}


@dataclass(frozen=True, slots=True)
class BasicsSettings:
    """The demo's one option: seconds between two ticks (changed live with POST /basics/interval)."""

    interval: float = 1.0


def create_app(hub: Hub | None = None, *, interval: float = 1.0) -> App:
    hub = hub or Hub()
    router = Router(hub, "basics")
    ticker = Ticker(hub, router, interval)
    return App(
        prefix="/basics",
        settings=BasicsSettings(interval),
        closables=[router, hub],  # the router says goodbye through the hub: first
        route_handlers=[
            *health_routes(),
            page,
            events,
            set_interval,
            get_interval,
            static_router("/basics", STATIC, name="basics-static"),
        ],
        state=State({"hub": hub, "ticker": ticker}),
        on_startup=[hub.start, router.start, ticker.start],
        on_shutdown=[ticker.stop, router.close, hub.close],
        **app_defaults(
            "/basics", "basics", "Numbered ticks over SSE, resumable with Last-Event-ID.", max_body=MAX_BODY
        ),
    )
