"""``/dashboard/``: live system metrics from psutil, with guarded control actions.

- ``GET /dashboard/events``: ``snapshot`` + ``history`` on connect, then ephemeral ``metrics``
  frames, and stored (replayed on resume) ``alert``, ``resolved``, ``command``, ``settings``.
- ``GET /dashboard/snapshot``, ``/history``, ``/audit``, ``/whoami``: the same state as JSON.
- ``POST /dashboard/commands``: settings and process actions; control token required.
- ``POST /dashboard/login`` / ``logout``: the page's HttpOnly cookie.
- ``GET /dashboard/session/events`` + ``POST /dashboard/session/respond``: the page's session, over
  which the server asks it to confirm dangerous actions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import ClientException, ValidationException
from litestar.openapi.spec import Example
from litestar.params import Body, FromQuery, JSONBody
from litestar.response import File, Stream

from shared.apps import app_defaults
from shared.correlation import Correlator
from shared.errors import errors
from shared.hub import Hub
from shared.openapi import JSONRPC_RESPONSE, FileOperation, read_body
from shared.pages import static_router, vendor_router
from shared.responses import last_event_id, sse_response
from shared.security import redact_access_log

from .actions import parse_command
from .alerts import Rule
from .audit import AuditLog
from .auth import ControlAuth
from .commands import Commander
from .sampler import TOPIC, Sampler

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


@get("/dashboard/events", media_type="text/event-stream", raises=errors(503))
async def events(request: Request[Any, Any, Any], state: State) -> Stream:
    """The latest state first (never stale frames), then live frames and events."""
    sampler: Sampler = state.sampler
    return sse_response(state.hub, TOPIC, last_id=last_event_id(request), prelude=sampler.prelude)


@get("/dashboard/snapshot")
async def snapshot(state: State) -> dict[str, Any]:
    sampler: Sampler = state.sampler
    return sampler.snapshot()


@get("/dashboard/history")
async def history(state: State) -> dict[str, Any]:
    sampler: Sampler = state.sampler
    return sampler.history_json()


@get("/dashboard/audit")
async def audit_log(
    state: State, limit: FromQuery[int] = 100, before: FromQuery[int | None] = None
) -> list[dict[str, Any]]:
    """The audit log, newest first; ``before=<id>`` pages back."""
    if not 1 <= limit <= 1000:
        raise ValidationException("limit must be between 1 and 1000")
    if before is not None and not 1 <= before <= MAX_ROW_ID:
        # Found by schemathesis: a larger int does not fit SQLite's INTEGER (OverflowError, a 500).
        raise ValidationException("before must be an audit entry id (a positive 64-bit integer)")
    audit: AuditLog = state.audit
    return await audit.arecent(limit, before)


@get("/dashboard/whoami")
async def whoami(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    auth: ControlAuth = state.auth
    actor = auth.actor(request)
    return {"can_control": actor is not None, "via": actor.via if actor else None}


@post("/dashboard/login", status_code=200, raises=errors(401, 403, 413, 429))
async def login(request: Request[Any, Any, Any], state: State, data: JSONBody[LoginBody]) -> Response[dict[str, Any]]:
    """``{"token": "..."}`` -> an HttpOnly, SameSite=Strict cookie for ``/dashboard``."""
    auth: ControlAuth = state.auth
    cookie = auth.login(data.token, secure=request.url.scheme == "https")
    return Response({"can_control": True, "via": "cookie"}, cookies=[cookie])


@post("/dashboard/logout", status_code=200, raises=errors(403))
async def logout() -> Response[dict[str, Any]]:
    return Response({"can_control": False, "via": None}, cookies=[ControlAuth.logout_cookie()])


@post("/dashboard/commands", status_code=200, raises=errors(401, 403, 404, 409, 413, 422, 503))
async def commands(request: Request[Any, Any, Any], state: State, data: JSONBody[CommandBody]) -> dict[str, Any]:
    """Run a command and answer its outcome (after the confirmation, when one is needed)."""
    auth: ControlAuth = state.auth
    actor = auth.require(request)
    try:
        cmd = parse_command(data)
    except ValueError as exc:
        raise ClientException(status_code=422, detail=str(exc)) from None
    commander: Commander = state.commander
    return await commander.run(cmd, actor)


@get("/dashboard/session/events", media_type="text/event-stream", raises=errors(403, 409, 429, 503))
async def session_events(
    request: Request[Any, Any, Any],
    state: State,
    client_id: FromQuery[str | None] = None,
    token: FromQuery[str | None] = None,
) -> Stream:
    """The page's session stream: the server's confirmation requests arrive here. Reconnect with
    ``?client_id=&token=`` (from the ``session`` event) to keep the same session."""
    correlator: Correlator = state.correlator
    return correlator.stream(request, client_id or None)  # it reads the token itself (query or Bearer)


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
) -> Litestar:
    """The dashboard app. ``control_token=None`` generates one: read it with :func:`control_token`
    (``app.state.control_token_generated`` says whether it was)."""
    hub = hub or Hub()
    auth = ControlAuth(control_token)
    sampler = Sampler(hub, interval=interval, history_seconds=history_seconds, process_limit=process_limit, rules=rules)
    correlator = Correlator(hub, grace=session_grace, max_timeout=max(confirm_timeout, 1.0))
    audit = AuditLog(Path(data_dir) / "dashboard.sqlite3")
    commander = Commander(hub, sampler, correlator, audit, confirm_timeout=confirm_timeout)
    return Litestar(
        route_handlers=[
            page,
            events,
            snapshot,
            history,
            audit_log,
            whoami,
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
                "control_token": auth.token,
                "control_token_generated": auth.generated,
                "sse_hubs": [hub],
            }
        ),
        on_startup=[redact_access_log, hub.start, correlator.start, audit.start, sampler.start],
        on_shutdown=[sampler.stop, correlator.close, audit.stop, hub.close],
        **app_defaults(
            "/dashboard", "dashboard", "Live system metrics over SSE, with guarded control actions.", max_body=MAX_BODY
        ),
    )


def login_lines(app: Litestar, base_url: str) -> list[str]:
    """What to print at start: where the dashboard is and, if generated, its control token."""
    url = f"{base_url}/dashboard/"
    lines = [f"Dashboard on {url}"]
    if app.state.control_token_generated:
        token = control_token(app)
        lines += [
            f"Control token (generated): {token}",
            f"Open {url}#token={token} to log in with it, or send 'Authorization: Bearer {token}'.",
        ]
    else:
        lines.append("Control token: as given (--control-token or DASHBOARD_CONTROL_TOKEN)")
    return lines
