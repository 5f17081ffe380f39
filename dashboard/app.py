"""``/dashboard/``: live system metrics from psutil, with guarded control actions, for one or more hosts.

- ``GET /dashboard/events?host=``: ``hosts`` + ``snapshot`` + ``history`` on connect, then ephemeral
  ``metrics`` frames, and stored (replayed on resume) ``alert``, ``resolved``, ``command``,
  ``settings``; ``gone`` when the host went away.
- ``GET /dashboard/hosts``: the hosts this instance can see (each instance publishes its own).
- ``GET /dashboard/snapshot``, ``/history``, ``/audit`` (``?host=``), ``/whoami``: state as JSON.
- ``POST /dashboard/commands?host=``: settings and process actions, run by the instance that owns
  the host; control token required.
- ``POST /dashboard/login`` / ``logout``: the page's login session (an HttpOnly cookie naming it).
- ``GET /dashboard/session/events`` + ``POST /dashboard/session/respond``: the page's session, over
  which the server asks it to confirm dangerous actions; it notes the login it was opened with.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.openapi.spec import Example
from litestar.params import Body, FromQuery, JSONBody, QueryParameter
from litestar.response import File, Stream

from shared.apps import app_defaults
from shared.backends import Backend
from shared.correlation import Correlator
from shared.encoding import encode_json
from shared.errors import errors
from shared.health import health_routes
from shared.hub import Hub, Subscription
from shared.openapi import JSONRPC_RESPONSE, FileOperation, read_body
from shared.pages import static_router, vendor_router
from shared.responses import last_event_id, sse_response
from shared.routing import Router
from shared.security import redact_access_log

from .alerts import Rule
from .audit import AuditLog
from .auth import COOKIE, ControlAuth
from .cluster import Cluster
from .commands import Commander
from .hosts import Hosts, check_host_name, host_topic
from .sampler import Sampler
from .sessions import IDLE, MAX_AGE, LoginSessions, SqliteSessions

__all__ = ["control_token", "create_app"]

STATIC = Path(__file__).parent / "static"
MAX_ROW_ID = 2**63 - 1  # SQLite's largest INTEGER
# Commands and answers are small JSON objects; a set_rules list of 20 rules is about 2 KiB.
MAX_BODY = 64 * 1024


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    token: str


CommandBody = Annotated[
    dict[str, Any],
    Body(
        title="Command",
        description='{"action": ...} and its arguments: set_interval {seconds}, pause_sampling, resume_sampling, '
        "set_rules {rules: [{metric, above, for_s}]}, or a process action (terminate, kill, suspend, resume, "
        "renice {nice}) with {pid, start_time} and {client_id} of the page that confirms it "
        '(Bearer clients may send "confirm": false instead)',
        examples=[Example(value={"action": "set_interval", "seconds": 2})],
    ),
]


@get("/dashboard/", media_type="text/html", operation_class=FileOperation)
async def page() -> File:
    """The dashboard page (HTML; its scripts and styles are under ``/dashboard/static/``)."""
    return File(STATIC / "dashboard.html", content_disposition_type="inline", media_type="text/html")


HOST_DOC = "a host name from GET /dashboard/hosts (default: this instance's own host)"
HostQuery = Annotated[str | None, QueryParameter(description=HOST_DOC)]


@get("/dashboard/events", media_type="text/event-stream", raises=errors(400, 404, 429, 503, 504))
async def events(request: Request[Any, Any, Any], state: State, host: HostQuery = None) -> Stream:
    """The host list and the latest state first (never stale frames), then live frames and events."""
    hosts: Hosts = state.hosts
    cluster: Cluster = state.cluster
    name = hosts.resolve(host)
    last_id = last_event_id(request)
    if hosts.owns(name):
        sampler: Sampler = state.sampler

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
        state.hub, host_topic(name), last_id=last_id, prelude=body, on_open=opened, on_close=closed, farewell=farewell
    )


@get("/dashboard/hosts")
async def hosts_list(state: State) -> dict[str, Any]:
    """The hosts this instance sees: live ones with their owning instance, and those gone."""
    hosts: Hosts = state.hosts
    return hosts.info()


@get("/dashboard/snapshot", raises=errors(400, 404, 503, 504))
async def snapshot(state: State, host: HostQuery = None) -> dict[str, Any]:
    hosts: Hosts = state.hosts
    cluster: Cluster = state.cluster
    result: dict[str, Any] = await cluster.snapshot(hosts.resolve(host))
    return result


@get("/dashboard/history", raises=errors(400, 404, 503, 504))
async def history(state: State, host: HostQuery = None) -> dict[str, Any]:
    hosts: Hosts = state.hosts
    cluster: Cluster = state.cluster
    result: dict[str, Any] = await cluster.history(hosts.resolve(host))
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
    hosts: Hosts = state.hosts
    cluster: Cluster = state.cluster
    result: list[dict[str, Any]] = await cluster.audit_log(hosts.resolve(host), limit, before)
    return result


@get("/dashboard/whoami")
async def whoami(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    auth: ControlAuth = state.auth
    actor = await auth.actor(request)
    return {"can_control": actor is not None, "via": actor.via if actor else None}


@post("/dashboard/login", status_code=200, raises=errors(401, 403, 413, 429, 503))
async def login(request: Request[Any, Any, Any], state: State, data: JSONBody[LoginBody]) -> Response[dict[str, Any]]:
    """``{"token": "..."}`` -> a new login session, named by an HttpOnly, SameSite=Strict cookie for
    ``/dashboard`` (the session the browser had, if any, is revoked)."""
    auth: ControlAuth = state.auth
    address = request.client.host if request.client else "unknown"
    cookie = await auth.login(
        data.token, secure=request.url.scheme == "https", address=address, old=request.cookies.get(COOKIE)
    )
    return Response({"can_control": True, "via": "cookie"}, cookies=[cookie])


@post("/dashboard/logout", status_code=200, raises=errors(403, 503))
async def logout(request: Request[Any, Any, Any], state: State) -> Response[dict[str, Any]]:
    """Revoke this browser's login session, on every instance at once."""
    auth: ControlAuth = state.auth
    await auth.logout(request)
    return Response({"can_control": False, "via": None}, cookies=[ControlAuth.logout_cookie()])


@post("/dashboard/commands", status_code=200, raises=errors(400, 401, 403, 404, 409, 413, 422, 503, 504))
async def commands(
    request: Request[Any, Any, Any], state: State, data: JSONBody[CommandBody], host: HostQuery = None
) -> dict[str, Any]:
    """Run a command on the instance that owns the host and answer its outcome (after the
    confirmation, when one is needed). 503 when the host went away."""
    auth: ControlAuth = state.auth
    actor = await auth.require(request)
    hosts: Hosts = state.hosts
    cluster: Cluster = state.cluster
    result: dict[str, Any] = await cluster.command(hosts.resolve(host), data, actor)
    return result


@get("/dashboard/session/events", media_type="text/event-stream", raises=errors(403, 409, 429, 503))
async def session_events(
    request: Request[Any, Any, Any],
    state: State,
    client_id: FromQuery[str | None] = None,
    token: FromQuery[str | None] = None,
) -> Stream:
    """The page's session stream: the server's confirmation requests arrive here. Reconnect with
    ``?client_id=&token=`` (from the ``session`` event) to keep the same session. Only a stream
    opened with a live login cookie can confirm anything, and only that login's commands."""
    correlator: Correlator = state.correlator
    auth: ControlAuth = state.auth
    login = await auth.session_of(request)
    # Noted on the session at every (re)open, so it is always the current opener's login.
    meta = {"login": login.key} if login is not None else {}
    # Checked against every instance: a reconnect that lands elsewhere moves the session there.
    return await correlator.open_stream(request, client_id or None, meta=meta)  # token: query or Bearer


@post(
    "/dashboard/session/respond",
    status_code=200,
    raises=errors(400, 403, 404, 409, 413),
    operation_class=read_body("application/json", JSONRPC_RESPONSE, "a JSON-RPC 2.0 response object"),
)
async def session_respond(request: Request[Any, Any, Any], state: State) -> dict[str, str]:
    """A JSON-RPC response to a confirmation request, authorised by the session token
    (``Authorization: Bearer``)."""
    correlator: Correlator = state.correlator
    return {"id": await correlator.answer_request(request), "status": "delivered"}


def control_token(app: Litestar) -> str:
    """The control token of an app made by :func:`create_app` (to print it, if it was generated)."""
    token: str = app.state.control_token
    return token


def create_app(
    data_dir: Path,
    *,
    control_token: str | None = None,
    interval: float = 1.0,
    hub: Hub | None = None,
    history_seconds: float = 300.0,
    confirm_timeout: float = 30.0,
    process_limit: int = 300,
    rules: list[Rule] | None = None,
    session_grace: float = 30.0,
    max_sessions: int = 10_000,
    max_login_failures: int = 10,
    host_name: str | None = None,
    beat: float = 2.0,
    login_max_age: float = MAX_AGE,
    login_idle: float = IDLE,
) -> Litestar:
    """The dashboard app. ``control_token=None`` generates one: read it with :func:`control_token`
    (``app.state.control_token_generated`` says whether it was). ``max_sessions`` caps the pages'
    confirmation sessions (429 past it); ``max_login_failures`` wrong log-ins from one client address
    within a minute make that address's further log-ins 429 for the rest of the minute.

    Several instances on one Redis ``hub`` show each other's hosts: ``host_name`` (default: the
    machine's name) is the host this instance samples, or shares with other instances of the same
    name, one of which samples it. Instances announce themselves every ``beat`` seconds; one
    not heard from for three beats is gone. All instances must share the control token.

    A log-in lasts ``login_max_age`` seconds at most (default 12 h), and ends after ``login_idle``
    seconds unused (default 12 h); the sessions are in ``<data_dir>/dashboard-logins.sqlite3``,
    or in the hub's Redis when it has one, shared by every instance there."""
    name = check_host_name(host_name if host_name is not None else default_host_name())
    hub = hub or Hub()
    logins = login_sessions(hub.backend, Path(data_dir), max_age=login_max_age, idle=login_idle)
    auth = ControlAuth(control_token, sessions=logins, max_failures=max_login_failures)
    sampler = Sampler(
        hub,
        interval=interval,
        history_seconds=history_seconds,
        process_limit=process_limit,
        rules=rules,
        topic=host_topic(name),
    )
    router = Router(hub, "dashboard", meta={"host": name, "since": time.time()}, beat=beat)
    # With the router, a page session lives on the instance its stream last opened on, and a
    # confirmation is asked there (a reconnect elsewhere moves it; issue 13).
    correlator = Correlator(
        hub, grace=session_grace, max_timeout=max(confirm_timeout, 1.0), max_sessions=max_sessions, router=router
    )
    audit = AuditLog(Path(data_dir) / "dashboard.sqlite3")
    commander = Commander(hub, sampler, correlator, audit, auth, confirm_timeout=confirm_timeout)
    hosts = Hosts(router, sampler, name)
    cluster = Cluster(router, hosts, sampler, commander, audit)
    return Litestar(
        route_handlers=[
            *health_routes(),
            page,
            events,
            snapshot,
            history,
            audit_log,
            whoami,
            hosts_list,
            login,
            logout,
            commands,
            session_events,
            session_respond,
            static_router("/dashboard", STATIC, name="dashboard-static"),
            vendor_router("/dashboard", name="dashboard-vendor"),
        ],
        state=State(
            {
                "hub": hub,
                "sampler": sampler,
                "auth": auth,
                "correlator": correlator,
                "audit": audit,
                "commander": commander,
                "router": router,
                "hosts": hosts,
                "cluster": cluster,
                "control_token": auth.token,
                "control_token_generated": auth.generated,
                # Closed in this order by shared.server before the app's shutdown hooks: no more
                # frames, then the goodbye (through the hub, so before it), so another instance of
                # this host takes over and the others see it gone at once, not after three beats.
                "sse_hubs": [hosts, router, hub],
            }
        ),
        # The election in hosts.start starts the sampler when this instance owns its host.
        on_startup=[
            redact_access_log,
            hub.start,
            correlator.start,
            audit.start,
            logins.start,
            router.start,
            hosts.start,
        ],
        on_shutdown=[hosts.stop, correlator.close, router.close, logins.close, audit.stop, hub.close],
        **app_defaults(
            "/dashboard", "dashboard", "Live system metrics over SSE, with guarded control actions.", max_body=MAX_BODY
        ),
    )


def login_sessions(backend: Backend, data_dir: Path, *, max_age: float, idle: float) -> LoginSessions:
    """In the hub's Redis when it has one (every instance must see a log-out at once), else in SQLite."""
    url = getattr(backend, "url", None)
    if backend.spans_processes and isinstance(url, str):
        from .redis_sessions import RedisSessions  # only with Redis: redis-py is optional

        return RedisSessions(url, prefix=str(getattr(backend, "prefix", "sse:")), max_age=max_age, idle=idle)
    return SqliteSessions(data_dir / "dashboard-logins.sqlite3", max_age=max_age, idle=idle)


def default_host_name() -> str:
    """The machine's name, cut to what a host name may be here (``check_host_name``)."""
    raw = socket.gethostname().split(".")[0] or "localhost"
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in raw)[:63].lstrip("._-")
    return cleaned or "localhost"


def login_lines(app: Litestar, base_url: str) -> list[str]:
    """What to print at start: where the dashboard is and, if generated, its control token."""
    url = f"{base_url}/dashboard/"
    lines = [f"Dashboard on {url} (host {app.state.hosts.name!r})"]
    if app.state.control_token_generated:
        token = control_token(app)
        lines += [
            f"Control token (generated): {token}",
            f"Open {url}#token={token} to log in with it, or send 'Authorization: Bearer {token}'.",
        ]
    else:
        lines.append("Control token: as given (--control-token or DASHBOARD_CONTROL_TOKEN)")
    return lines
