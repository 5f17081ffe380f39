"""Acting on a host: log-in, commands, and the page's session over which the server asks it to confirm."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.spec import Example
from litestar.params import Body, FromQuery, JSONBody
from litestar.response import Stream

from shared.errors import errors
from shared.openapi import JSONRPC_RESPONSE, read_body

from .auth import COOKIE, ControlAuth
from .context import dashboard_of
from .routes_hosts import HostQuery

__all__ = ["handlers"]


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


@get("/dashboard/whoami")
async def whoami(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    actor = await dashboard_of(state).auth.actor(request)
    return {"can_control": actor is not None, "via": actor.via if actor else None}


@post("/dashboard/login", status_code=200, raises=errors(401, 403, 413, 429, 503))
async def login(request: Request[Any, Any, Any], state: State, data: JSONBody[LoginBody]) -> Response[dict[str, Any]]:
    """``{"token": "..."}`` -> a new login session, named by an HttpOnly, SameSite=Strict cookie for
    ``/dashboard`` (the session the browser had, if any, is revoked)."""
    address = request.client.host if request.client else "unknown"
    cookie = await dashboard_of(state).auth.login(
        data.token, secure=request.url.scheme == "https", address=address, old=request.cookies.get(COOKIE)
    )
    return Response({"can_control": True, "via": "cookie"}, cookies=[cookie])


@post("/dashboard/logout", status_code=200, raises=errors(403, 503))
async def logout(request: Request[Any, Any, Any], state: State) -> Response[dict[str, Any]]:
    """Revoke this browser's login session, on every instance at once."""
    await dashboard_of(state).auth.logout(request)
    return Response({"can_control": False, "via": None}, cookies=[ControlAuth.logout_cookie()])


@post("/dashboard/commands", status_code=200, raises=errors(400, 401, 403, 404, 409, 413, 422, 503, 504))
async def commands(
    request: Request[Any, Any, Any], state: State, data: JSONBody[CommandBody], host: HostQuery = None
) -> dict[str, Any]:
    """Run a command on the instance that owns the host and answer its outcome (after the
    confirmation, when one is needed). 503 when the host went away."""
    d = dashboard_of(state)
    actor = await d.auth.require(request)
    result: dict[str, Any] = await d.cluster.command(d.hosts.resolve(host), data, actor)
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
    d = dashboard_of(state)
    login = await d.auth.session_of(request)
    # Noted on the session at every (re)open, so it is always the current opener's login.
    meta = {"login": login.key} if login is not None else {}
    # Checked against every instance: a reconnect that lands elsewhere moves the session there.
    return await d.correlator.open_stream(request, client_id or None, meta=meta)  # token: query or Bearer


@post(
    "/dashboard/session/respond",
    status_code=200,
    raises=errors(400, 403, 404, 409, 413),
    operation_class=read_body("application/json", JSONRPC_RESPONSE, "a JSON-RPC 2.0 response object"),
)
async def session_respond(request: Request[Any, Any, Any], state: State) -> dict[str, str]:
    """A JSON-RPC response to a confirmation request, authorised by the session token
    (``Authorization: Bearer``)."""
    return {"id": await dashboard_of(state).correlator.answer_request(request), "status": "delivered"}


handlers = [whoami, login, logout, commands, session_events, session_respond]
