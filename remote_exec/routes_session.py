"""Logging in and out, who you are, and the policy (operators only)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie, State
from litestar.exceptions import (
    NotAuthorizedException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.params import JSONBody

from shared.errors import errors
from shared.security import COOKIE_PATH

from .auth import COOKIE, SESSION_TTL_S, operator_guard, viewer_guard
from .context import address_of, exec_of, principal_of

__all__ = ["handlers"]


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    token: str
    name: str | None = None


@post("/exec/login", status_code=200, raises=errors(401, 403, 413, 429, 503))
async def login(request: Request[Any, Any, Any], data: JSONBody[LoginBody], state: State) -> Response[dict[str, Any]]:
    """Exchange a token for an HttpOnly session cookie (the page does this once)."""
    ex = exec_of(state)
    addr = address_of(request)
    wait = ex.login_failures.wait(addr)
    if wait is not None:
        ex.store.audit("?", "none", addr, "login-throttled", None)
        raise TooManyRequestsException(
            f"too many wrong tokens from {addr}; try again in {wait} s (log-ins are throttled per client address)",
            headers={"Retry-After": str(wait)},
        )
    try:
        principal, sid = await ex.auth.login(data.token.strip(), data.name)
    except ValueError as exc:
        raise ValidationException(str(exc)) from exc
    except NotAuthorizedException:
        ex.login_failures.failed(addr)
        # Who tried, from where; never what they typed (it may be a real token with a typo).
        ex.store.audit("?", "none", addr, "login-failed", None, name=(data.name or "")[:64])
        raise
    ex.store.audit(principal.name, principal.role, address_of(request), "login", principal.run_id)
    cookie = Cookie(
        key=COOKIE,
        value=sid,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=SESSION_TTL_S,
    )
    return Response(principal.public(), cookies=[cookie])


@post("/exec/logout", status_code=200, raises=errors(403))
async def logout(request: Request[Any, Any, Any], state: State) -> Response[dict[str, bool]]:
    ex = exec_of(state)
    grant = await ex.auth.logout(request.cookies.get(COOKIE))
    if grant is not None:
        await ex.grants.revoke(grant, "logged out")
    return Response({"ok": True}, cookies=[Cookie(key=COOKIE, value="", path=COOKIE_PATH, max_age=0, httponly=True)])


@get("/exec/me", guards=[viewer_guard], raises=errors(401))
async def me(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return principal_of(request).public()


@get("/exec/policy", guards=[operator_guard], raises=errors(401, 403))
async def get_policy(state: State) -> dict[str, Any]:
    return exec_of(state).policy.summary()


handlers = [login, logout, me, get_policy]
