"""Sharing (read-only viewer tokens) and the audit log, for operators."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import (
    NotFoundException,
    ValidationException,
)
from litestar.params import FromPath, FromQuery, JSONBody

from shared.errors import errors

from .auth import clean_name, operator_guard
from .context import PREFIX, address_of, exec_of, find_run, principal_of

__all__ = ["handlers"]

MAX_VIEWER_TTL_S = 30 * 86400


class TokenBody(msgspec.Struct, forbid_unknown_fields=True):
    run_id: str | None = None
    ttl_s: float = 86400.0
    label: str | None = None


@post("/exec/tokens", guards=[operator_guard], status_code=201, raises=errors(401, 403, 404, 413, 503))
async def mint_token(request: Request[Any, Any, Any], data: JSONBody[TokenBody], state: State) -> dict[str, Any]:
    """A read-only viewer token, for one run (``run_id``) or all; shown once, stored hashed."""
    ex = exec_of(state)
    if data.run_id is not None:
        await find_run(ex, data.run_id)
    if not 60 <= data.ttl_s <= MAX_VIEWER_TTL_S:
        raise ValidationException(f"ttl_s must be between 60 and {MAX_VIEWER_TTL_S} seconds")
    try:
        label = clean_name(data.label, "shared")
    except ValueError as exc:
        raise ValidationException(str(exc).replace("name", "label", 1)) from exc
    principal = principal_of(request)
    token_id, token, expires_at = await ex.auth.mint_viewer(
        run_id=data.run_id, ttl_s=data.ttl_s, label=label, created_by=principal.name
    )
    ex.store.audit(
        principal.name, principal.role, address_of(request), "mint-viewer-token", data.run_id, token_id=token_id
    )
    url = f"{PREFIX}/#token={token}" + (f"&run={data.run_id}" if data.run_id else "")
    return {"id": token_id, "token": token, "run_id": data.run_id, "label": label, "expires_at": expires_at, "url": url}


@get("/exec/tokens", guards=[operator_guard], raises=errors(401, 403))
async def list_tokens(state: State) -> dict[str, list[dict[str, Any]]]:
    return {"tokens": [t.public() for t in await exec_of(state).auth.credentials.list_tokens()]}


@delete("/exec/tokens/{token_id:str}", guards=[operator_guard], status_code=200, raises=errors(401, 403, 404))
async def revoke_token(request: Request[Any, Any, Any], token_id: FromPath[str], state: State) -> dict[str, Any]:
    ex = exec_of(state)
    if not await ex.auth.credentials.revoke_token(token_id):
        raise NotFoundException(f"no active viewer token {token_id!r}")
    # Its open streams end too, on every instance, each with a last "revoked" event.
    await ex.grants.revoke(f"viewer:{token_id}", "revoked")
    principal = principal_of(request)
    ex.store.audit(principal.name, principal.role, address_of(request), "revoke-viewer-token", None, token_id=token_id)
    return {"revoked": token_id}


@get("/exec/audit", guards=[operator_guard], raises=errors(401, 403))
async def audit_log(
    state: State, limit: FromQuery[int] = 200, run_id: FromQuery[str | None] = None
) -> dict[str, list[dict[str, Any]]]:
    """Who ran what, where, when, and how it ended; logins, input, signals, refusals. Newest first."""
    if not 1 <= limit <= 5000:
        raise ValidationException("limit must be between 1 and 5000")
    return {"entries": exec_of(state).store.list_audit(limit, run_id)}


handlers = [mint_token, list_tokens, revoke_token, audit_log]
