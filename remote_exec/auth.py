"""Who is asking: the operator token, viewer tokens, and the login cookie.

- The **operator** token (``--token`` / ``REMOTE_EXEC_TOKEN`` / generated) may do everything.
- **Viewer** tokens are minted by an operator, stored only as hashes, expire, can be revoked, and
  may be limited to one run. Viewers can watch; they cannot start runs or send input or signals.
- Either is sent as ``Authorization: Bearer <token>``, or exchanged once at ``POST /exec/login``
  for an HttpOnly, SameSite=Strict cookie holding a random session id (not the token), so the
  page's ``EventSource`` is authenticated without the token ever being in a URL.

An operator session is bound to the operator token it was made with: start the server with a new
token and old sessions stop working. A viewer session ends with its viewer token.

Tokens and sessions are kept by a ``Credentials`` backend: the instance's SQLite file, or (several
instances) Redis, so that every instance knows them, even after the one that made them died.
A principal names the credentials it stands on (``grants``) and when they expire: an open stream
ends when one of them is revoked or expires (``grants.py``).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from shared.security import bearer, new_token, tokens_equal

from .credentials import Credentials, Session, ViewerToken

__all__ = ["COOKIE", "Auth", "Principal", "operator_guard", "viewer_guard"]

COOKIE = "exec_session"
SESSION_TTL_S = 12 * 3600
VIEWER_PREFIX = "v_"
_NAME_RE = re.compile(r"^[\w .@+-]{1,40}$")

Role = Literal["operator", "viewer"]


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    name: str
    run_id: str | None = None  # a viewer limited to one run
    # What this principal stands on: "viewer:<token id>", "session:<sid hash>" (revocable), and
    # when the first of them expires; the operator token itself is neither.
    grants: tuple[str, ...] = ()
    expires_at: float | None = None

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    def public(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "run_id": self.run_id}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def clean_name(name: str | None, default: str) -> str:
    if not name:
        return default
    name = name.strip()
    if not _NAME_RE.match(name):
        raise ValueError("name must be 1-40 letters, digits, spaces or . @ + - _")
    return name


def _wrong() -> NotAuthorizedException:
    return NotAuthorizedException("wrong or expired token", headers={"WWW-Authenticate": "Bearer"})


class Auth:
    def __init__(self, credentials: Credentials, operator_token: str) -> None:
        if len(operator_token) < 16:
            raise ValueError("the operator token must be at least 16 characters")
        self.credentials = credentials
        self.operator_token = operator_token
        self._fingerprint = "operator:" + _hash(operator_token)[:32]

    # -- tokens -----------------------------------------------------------------------------

    async def check_token(self, token: str | None) -> Principal | None:
        if not token:
            return None
        if tokens_equal(token, self.operator_token):
            return Principal("operator", "operator")
        if token.startswith(VIEWER_PREFIX):
            # Looked up by hash: what is compared is a digest, so timing reveals nothing useful.
            found = await self.credentials.find_token(_hash(token))
            if found is not None:
                return _viewer(found)
        return None

    async def mint_viewer(
        self, *, run_id: str | None, ttl_s: float, label: str, created_by: str
    ) -> tuple[str, str, float]:
        """A new viewer token: (token id, token, expiry). Only the hash is stored."""
        token = VIEWER_PREFIX + new_token()
        token_id = new_token(6)
        now = time.time()
        record = ViewerToken(token_id, _hash(token), run_id, label, created_by, now, now + ttl_s)
        await self.credentials.add_token(record)
        return token_id, token, record.expires_at

    # -- sessions ---------------------------------------------------------------------------

    async def login(self, token: str, name: str | None) -> tuple[Principal, str]:
        if tokens_equal(token, self.operator_token):
            principal = Principal("operator", clean_name(name, "operator"))
            parent = self._fingerprint
        else:
            found = await self.credentials.find_token(_hash(token)) if token.startswith(VIEWER_PREFIX) else None
            if found is None:
                raise _wrong()
            principal = _viewer(found)
            parent = f"viewer:{found.id}"
        sid = new_token(32)
        expires_at = time.time() + SESSION_TTL_S
        session = Session(_hash(sid), principal.role, principal.name, principal.run_id, parent, expires_at)
        await self.credentials.add_session(session)
        return principal, sid

    async def logout(self, sid: str | None) -> str | None:
        """End the session; returns its grant (``session:<hash>``) for its streams to end too."""
        if not sid:
            return None
        sid_hash = _hash(sid)
        await self.credentials.delete_session(sid_hash)
        return f"session:{sid_hash}"

    async def check_session(self, sid: str | None) -> Principal | None:
        if not sid:
            return None
        sid_hash = _hash(sid)
        row = await self.credentials.get_session(sid_hash)
        if row is None:
            return None
        grant = f"session:{sid_hash}"
        if row.role == "operator":
            if not tokens_equal(row.parent, self._fingerprint):
                return None  # made with another operator token (the server was restarted with a new one)
            return Principal("operator", row.name, grants=(grant,), expires_at=row.expires_at)
        token = await self.credentials.get_token(row.parent.removeprefix("viewer:"))
        if token is None:
            return None
        return Principal(
            "viewer", row.name, row.run_id, grants=(grant, row.parent), expires_at=min(row.expires_at, token.expires_at)
        )

    async def authenticate(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
        token = bearer(connection.headers.get("authorization"))
        if token is not None:
            return await self.check_token(token)
        return await self.check_session(connection.cookies.get(COOKIE))


def _viewer(token: ViewerToken) -> Principal:
    return Principal(
        "viewer", f"viewer:{token.label}", token.run_id, grants=(f"viewer:{token.id}",), expires_at=token.expires_at
    )


async def _authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    auth: Auth = connection.app.state.exec_auth
    principal = await auth.authenticate(connection)
    if principal is None:
        raise NotAuthorizedException(
            "missing or invalid token: send 'Authorization: Bearer <token>', or log in on the /exec/ page",
            headers={"WWW-Authenticate": "Bearer"},
        )
    run_id = connection.path_params.get("run_id")
    if principal.run_id is not None and run_id is not None and run_id != principal.run_id:
        raise PermissionDeniedException(f"this viewer token only gives access to run {principal.run_id}")
    connection.state.principal = principal
    return principal


async def viewer_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Any valid token (operator or viewer); a run-limited viewer only reaches its run.

    Guards are async: Litestar runs sync guards in a worker thread, per request."""
    await _authenticate(connection)


async def operator_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    principal = await _authenticate(connection)
    if not principal.is_operator:
        raise PermissionDeniedException(
            "read-only viewer: only an operator can start runs, send input or signals, or mint tokens"
        )
