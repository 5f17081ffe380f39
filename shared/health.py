"""``GET /healthz`` and ``GET /readyz`` for the process, and the drain that comes before a stop.

- ``/healthz``: the process answers (an event loop that runs). Always 200 while it is up.
- ``/readyz``: it can serve: every backend its apps use answers (Redis ``PING``, 1 s at most) and
  it is not stopping. 200 ``{"ready": true, "checks": {...}}``, else **503** with the failing
  checks, so a load balancer stops sending it clients.

Both are routes of every app (:func:`health_routes`) so each app's OpenAPI documents them; they
read one :class:`Health` that the server puts in the lifespan state, so on the combined server
they speak for every mounted app. Served without our :class:`shared.server.Server` (a test
client), they look at the app answering the request.

The drain (``--drain-seconds N``, issue 19): on SIGTERM the instance turns not-ready and refuses
new streams with 503 + ``Retry-After`` at once, keeps serving the open ones and every other
request for ``N`` seconds (a load balancer's health check notices, or a proxy's retry sends the
503s elsewhere), then ends its streams with ``shutdown`` and a retry hint and exits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from litestar import Request, Response, get

from .apps import closables_of
from .backends.base import Backend, BackendUnavailable

__all__ = ["HEALTH", "Health", "health_routes"]

HEALTH = "sse.health"  # its key in the lifespan state (copied into every request's scope["state"])
PING_TIMEOUT_S = 1.0


class Health:
    """What ``/readyz`` checks, for the hubs of everything one server runs."""

    def __init__(self, hubs: Callable[[], Iterable[Any]]) -> None:
        self._hubs = hubs  # called each time: hubs are found once the app is built
        self.draining_since: float | None = None

    def hubs(self) -> list[Any]:
        found: dict[int, Any] = {}
        for item in self._hubs():
            # An app may list an object that owns its hub and closes it in order (bidi's
            # lifespan: the router, then the hub): its hub drains and is checked all the same.
            for hub in (item, getattr(item, "hub", None)):
                if hasattr(hub, "backend") and hasattr(hub, "accepting"):
                    found.setdefault(id(hub), hub)
        return list(found.values())

    def drain(self) -> None:
        """Not ready from now on; new streams are refused (open ones carry on)."""
        if self.draining_since is None:
            self.draining_since = time.monotonic()
        for hub in self.hubs():
            hub.draining = True

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        hubs = self.hubs()
        checks: dict[str, str] = {}
        if self.draining_since is not None or any(not h.accepting for h in hubs):
            checks["server"] = "stopping: new streams go to another instance"
        else:
            checks["server"] = "ok"
        backends: dict[int, Backend] = {id(h.backend): h.backend for h in hubs}
        results = await asyncio.gather(*(_ping(b) for b in backends.values()))
        for backend, result in zip(backends.values(), results, strict=True):
            checks[backend.describe()] = result
        return all(v == "ok" for v in checks.values()), checks


async def _ping(backend: Backend) -> str:
    try:
        await asyncio.wait_for(backend.ping(), PING_TIMEOUT_S)
    except (BackendUnavailable, TimeoutError, OSError) as exc:
        return f"unreachable: {exc}" if str(exc) else "unreachable: no answer within 1 s"
    return "ok"


def _health_of(request: Request[Any, Any, Any]) -> Health:
    health = (request.scope.get("state") or {}).get(HEALTH)
    if isinstance(health, Health):
        return health
    app = request.app
    return Health(lambda: closables_of(app) or [])


@get(
    "/healthz",
    tags=["operations"],
    summary="Alive: the process answers",
    description="200 while the process runs. For a liveness probe: restart it if this fails.",
    sync_to_thread=False,
    include_in_schema=True,
)
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@get(
    "/readyz",
    tags=["operations"],
    summary="Ready: backends reachable, not stopping",
    description="200 `{ready: true, checks}` when every backend answers and the server is not "
    "draining; else 503 with the failing checks (a load balancer should send clients elsewhere).",
)
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    ready, checks = await _health_of(request).readiness()
    return Response(
        {"ready": ready, "checks": checks},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "1"},
    )


def health_routes() -> list[Any]:
    """``/healthz``, ``/readyz`` and ``/metrics`` (:mod:`shared.metrics`), for an app's ``route_handlers``."""
    from .metrics import metrics_route  # (prometheus-client is imported only with the routes)

    return [healthz, readyz, metrics_route]
