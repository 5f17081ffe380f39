"""What the dashboard shows: a host's live stream, its snapshot, history and audit log, the host list."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream

from shared.encoding import encode_json
from shared.errors import errors
from shared.hub import Subscription
from shared.responses import last_event_id, sse_response

from .context import dashboard_of
from .hosts import host_topic

__all__ = ["HostQuery", "handlers"]

MAX_ROW_ID = 2**63 - 1  # SQLite's largest INTEGER
HOST_DOC = "a host name from GET /dashboard/hosts (default: this instance's own host)"
HostQuery = Annotated[str | None, QueryParameter(description=HOST_DOC)]


@get("/dashboard/events", media_type="text/event-stream", raises=errors(400, 404, 429, 503, 504))
async def events(request: Request[Any, Any, Any], state: State, host: HostQuery = None) -> Stream:
    """The host list and the latest state first (never stale frames), then live frames and events."""
    d = dashboard_of(state)
    hosts, cluster = d.hosts, d.cluster
    name = hosts.resolve(host)
    last_id = last_event_id(request)
    if hosts.owns(name):
        sampler = d.sampler

        async def prelude() -> bytes:
            return cluster.hosts_event() + await sampler.prelude()

        body: Any = prelude
    else:
        body, latest = await cluster.remote_prelude(name)  # 404/503 for a host not (or no longer) there
        last_id = last_id or latest
    subs: list[Subscription] = []

    def opened(sub: Subscription) -> None:
        subs.append(sub)
        hosts.stream_opened(name, sub)

    async def closed() -> None:
        for sub in subs:
            hosts.stream_closed(name, sub)

    def farewell(sub: Subscription) -> bytes | None:
        if sub.ended_reason != "gone":
            return None
        return encode_json({"host": name, "detail": f"host {name!r} went away: its dashboard stopped"}, event="gone")

    return sse_response(
        d.hub, host_topic(name), last_id=last_id, prelude=body, on_open=opened, on_close=closed, farewell=farewell
    )


@get("/dashboard/hosts")
async def hosts_list(state: State) -> dict[str, Any]:
    """The hosts this instance sees: live ones with their owning instance, and those gone."""
    return dashboard_of(state).hosts.info()


@get("/dashboard/snapshot", raises=errors(400, 404, 503, 504))
async def snapshot(state: State, host: HostQuery = None) -> dict[str, Any]:
    d = dashboard_of(state)
    result: dict[str, Any] = await d.cluster.snapshot(d.hosts.resolve(host))
    return result


@get("/dashboard/history", raises=errors(400, 404, 503, 504))
async def history(state: State, host: HostQuery = None) -> dict[str, Any]:
    d = dashboard_of(state)
    result: dict[str, Any] = await d.cluster.history(d.hosts.resolve(host))
    return result


@get("/dashboard/audit", raises=errors(400, 404, 503, 504))
async def audit_log(
    state: State, limit: FromQuery[int] = 100, before: FromQuery[int | None] = None, host: HostQuery = None
) -> list[dict[str, Any]]:
    """The audit log of a host (kept by its owner), newest first; ``before=<id>`` pages back."""
    if not 1 <= limit <= 1000:
        raise ValidationException("limit must be between 1 and 1000")
    if before is not None and not 1 <= before <= MAX_ROW_ID:
        # Found by schemathesis: a larger int does not fit SQLite's INTEGER (OverflowError, a 500).
        raise ValidationException("before must be an audit entry id (a positive 64-bit integer)")
    d = dashboard_of(state)
    result: list[dict[str, Any]] = await d.cluster.audit_log(d.hosts.resolve(host), limit, before)
    return result


handlers = [events, snapshot, history, audit_log, hosts_list]
