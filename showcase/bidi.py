"""``/bidi/``: two-way over SSE + POST. The server asks a connected client; the client answers.

- ``GET /bidi/events?client_id=``: a client's session stream (``session``, ``request``, ``cancel``).
- ``POST /bidi/respond``: a JSON-RPC response, ``Authorization: Bearer <session token>``.
- ``POST /bidi/trigger`` ``{client_id, method, params, timeout_s}``: send a request to a client and
  wait for its answer (404 unknown client, 504 timeout, 502 the client answered an error).
- ``GET /bidi/clients``: who is connected (on every instance, with the one holding each client).

With a shared backend (Redis), every instance of the app takes part: a trigger reaches a client
connected to another instance, and an answer may be POSTed to any of them
(``shared.correlation``, over ``shared.routing``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.params import FromQuery, JSONBody
from litestar.response import Stream

from shared import jsonrpc
from shared.apps import App, app_defaults
from shared.correlation import ClientGone, Correlator, RequestCancelled, RequestTimeout, UnknownClient
from shared.errors import errors
from shared.health import health_routes
from shared.hub import Hub
from shared.openapi import JSONRPC_RESPONSE, read_body
from shared.pages import page_route, static_router
from shared.routing import Router
from shared.security import redact_access_log

__all__ = ["create_app"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# Answers and trigger params are small JSON; a client answering with more is refused (413).
MAX_BODY = 256 * 1024


page = page_route("/bidi", STATIC / "bidi.html", "demo page")


@get("/bidi/events", media_type="text/event-stream", raises=errors(403, 409, 429, 503))
async def events(
    request: Request[Any, Any, Any],
    state: State,
    client_id: FromQuery[str | None] = None,
    token: FromQuery[str | None] = None,
) -> Stream:
    """A client's session stream. Reconnect with ``?client_id=&token=`` (or a Bearer header)."""
    correlator: Correlator = state.correlator
    return await correlator.open_stream(request, client_id or None)  # it reads the token (query or Bearer)


@post(
    "/bidi/respond",
    status_code=200,
    raises=errors(400, 403, 404, 409, 413),
    operation_class=read_body("application/json", JSONRPC_RESPONSE, "a JSON-RPC 2.0 response object"),
)
async def respond(request: Request[Any, Any, Any], state: State) -> dict[str, str]:
    """Answer a request: a JSON-RPC 2.0 response object, authorised by the session token
    (``Authorization: Bearer``)."""
    correlator: Correlator = state.correlator
    rid = await correlator.answer_request(request)
    return {"id": rid, "status": "delivered"}


class TriggerBody(msgspec.Struct, forbid_unknown_fields=True):
    client_id: str
    method: str = "analyze"
    params: Any = None
    timeout_s: float = 30.0


@post("/bidi/trigger", status_code=200, raises=errors(403, 404, 409, 410, 413, 429, 502, 503, 504))
async def trigger(data: JSONBody[TriggerBody], state: State) -> dict[str, Any]:
    """Send a request to a connected client and return its answer with the round-trip time.

    404 unknown client, 410 it left (away past the grace period), 504 no answer in time, 502 it
    answered an error, 503 the server (or the instance holding the client) is stopping or
    unreachable: retry once the client has reconnected."""
    correlator: Correlator = state.correlator
    if not data.method or len(data.method) > 100:
        raise ValidationException("method must be 1-100 characters")
    if not 0.1 <= data.timeout_s <= 600:
        raise ValidationException("timeout_s must be between 0.1 and 600")
    began = time.perf_counter()
    try:
        result = await correlator.request(data.client_id, data.method, data.params, timeout=data.timeout_s)
    except UnknownClient as exc:
        raise NotFoundException(str(exc)) from None
    except RequestTimeout as exc:
        raise HTTPException(status_code=504, detail=str(exc)) from None
    except ClientGone as exc:
        if correlator.closed:
            raise HTTPException(status_code=503, detail=str(exc), headers={"Retry-After": "1"}) from None
        raise HTTPException(status_code=410, detail=str(exc)) from None
    except RequestCancelled as exc:
        raise HTTPException(status_code=409, detail=f"request cancelled: {exc}") from None
    except jsonrpc.RemoteError as exc:
        raise HTTPException(
            status_code=502,
            detail=f"the client answered with an error: {exc.message}",
            extra={"code": exc.code, "message": exc.message, "data": exc.data},
        ) from None
    return {"client_id": data.client_id, "result": result, "rtt_ms": round((time.perf_counter() - began) * 1000, 2)}


@get("/bidi/clients")
async def clients(state: State) -> list[dict[str, Any]]:
    """Connected and briefly-away clients of every instance; ``instance`` holds each (``null``
    with a single instance)."""
    correlator: Correlator = state.correlator
    return await correlator.all_sessions()


class _Lifespan:
    """Start and stop the parts in order: the correlator fails its waiters (the ones forwarded
    from other instances answer 503 through the router), then the router says goodbye (within a
    bounded time), then the hub ends the streams. One object, so the order holds wherever it is
    closed from: the app's ``closables`` at shutdown, and ``on_shutdown``."""

    def __init__(self, hub: Hub, correlator: Correlator, router: Router | None) -> None:
        self.hub, self.correlator, self.router = hub, correlator, router

    async def start(self) -> None:
        await self.hub.start()
        await self.correlator.start()
        if self.router is not None:
            await self.router.start()

    async def close(self) -> None:
        await self.correlator.close()
        if self.router is not None:
            # Bounded: a router task whose cancel redis-py swallowed must not hold up shutdown.
            closing = asyncio.ensure_future(self.router.close())
            if not (await asyncio.wait({closing}, timeout=3))[0]:
                log.warning("the bidi router did not close within 3 s; closing the hub anyway")
        await self.hub.close()


@dataclass(frozen=True, slots=True)
class BidiSettings:
    """The correlator's grace period and caps (429 past them), as :func:`create_app` was given them."""

    grace: float = 30.0
    max_pending_per_client: int = 100
    max_sessions: int = 10_000
    max_sessions_per_client: int | None = 32


def create_app(
    hub: Hub | None = None,
    *,
    grace: float = 30.0,
    router: Router | None = None,
    max_pending_per_client: int = 100,
    max_sessions: int = 10_000,
    max_sessions_per_client: int | None = 32,
) -> App:
    """The demo on ``hub``. With a shared backend (anything but memory) its instances work as one:
    a :class:`Router` (namespace ``"bidi"``) is made unless one is given (on ``hub``).
    ``max_pending_per_client``, ``max_sessions`` and ``max_sessions_per_client`` (per client
    address, sessions in their grace period included) are the correlator's caps (429 past them)."""
    hub = hub or Hub()
    if router is None and hub.backend.spans_processes:
        router = Router(hub, "bidi")
    if router is not None and router.hub is not hub:
        raise ValueError("the router must be built on the app's hub")
    correlator = Correlator(
        hub,
        grace=grace,
        router=router,
        max_pending_per_client=max_pending_per_client,
        max_sessions=max_sessions,
        max_sessions_per_client=max_sessions_per_client,
    )
    lifespan = _Lifespan(hub, correlator, router)
    settings = BidiSettings(grace, max_pending_per_client, max_sessions, max_sessions_per_client)
    return App(
        prefix="/bidi",
        settings=settings,
        # Closed as soon as shutdown begins (shared.server closes the closables before uvicorn
        # waits for open requests): a trigger still waiting then gets a clear 503 at once, not a
        # 500 when uvicorn gives up waiting.
        closables=[lifespan],
        route_handlers=[
            *health_routes(),
            page,
            events,
            respond,
            trigger,
            clients,
            static_router("/bidi", STATIC, name="bidi-static"),
        ],
        state=State({"hub": hub, "correlator": correlator, "router": router}),
        on_startup=[redact_access_log, lifespan.start],
        on_shutdown=[lifespan.close],
        **app_defaults(
            "/bidi",
            "bidi",
            "Two-way over SSE + POST: the server asks a connected client, the client answers.",
            max_body=MAX_BODY,
        ),
    )
