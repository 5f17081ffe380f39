"""Who is asking: the operator token, viewer tokens, and the login cookie.

- The **operator** token (``--token`` / ``REMOTE_EXEC_TOKEN`` / generated) may do everything.
- **Viewer** tokens are minted by an operator, stored only as hashes, expire, can be revoked, and
  may be limited to one run. Viewers can watch; they cannot start runs or send input or signals.
- Either is sent as ``Authorization: Bearer <token>``, or exchanged once at ``POST /exec/login``
  for an HttpOnly, SameSite=Strict cookie holding a random session id (not the token), so the
  page's ``EventSource`` is authenticated without the token ever being in a URL.

An operator session is bound to the operator token it was made with: start the server with a new
token and old sessions stop working. A viewer session ends with its viewer token.
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

from shared.security import new_token, tokens_equal

from .store import Store

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


class Auth:
    def __init__(self, store: Store, operator_token: str) -> None:
        if len(operator_token) < 16:
            raise ValueError("the operator token must be at least 16 characters")
        self.store = store
        self.operator_token = operator_token
        self._fingerprint = "operator:" + _hash(operator_token)[:32]

    # -- tokens -----------------------------------------------------------------------------

    def check_token(self, token: str | None) -> Principal | None:
        if not token:
            return None
        if tokens_equal(token, self.operator_token):
            return Principal("operator", "operator")
        if token.startswith(VIEWER_PREFIX):
            # Looked up by hash: what is compared is a digest, so timing reveals nothing useful.
            row = self.store.find_viewer_token(_hash(token))
            if row is not None:
                return Principal("viewer", f"viewer:{row['label']}", row["run_id"])
        return None

    def mint_viewer(self, *, run_id: str | None, ttl_s: float, label: str, created_by: str) -> tuple[str, str, float]:
        """A new viewer token: (token id, token, expiry). Only the hash is stored."""
        token = VIEWER_PREFIX + new_token()
        token_id = new_token(6)
        expires_at = time.time() + ttl_s
        self.store.add_viewer_token(token_id, _hash(token), run_id, label, created_by, expires_at)
        return token_id, token, expires_at

    # -- sessions ---------------------------------------------------------------------------

    def login(self, token: str, name: str | None) -> tuple[Principal, str]:
        principal = self.check_token(token)
        if principal is None:
            raise NotAuthorizedException("wrong or expired token", headers={"WWW-Authenticate": "Bearer"})
        if principal.is_operator:
            principal = Principal("operator", clean_name(name, "operator"))
            parent = self._fingerprint
        else:
            row = self.store.find_viewer_token(_hash(token))
            if row is None:  # revoked in between
                raise NotAuthorizedException("wrong or expired token", headers={"WWW-Authenticate": "Bearer"})
            parent = f"viewer:{row['id']}"
        sid = new_token(32)
        self.store.add_session(
            _hash(sid), principal.role, principal.name, principal.run_id, parent, time.time() + SESSION_TTL_S
        )
        return principal, sid

    def logout(self, sid: str | None) -> None:
        if sid:
            self.store.delete_session(_hash(sid))

    def check_session(self, sid: str | None) -> Principal | None:
        if not sid:
            return None
        row = self.store.get_session(_hash(sid))
        if row is None:
            return None
        parent: str = row["parent"]
        if row["role"] == "operator":
            if not tokens_equal(parent, self._fingerprint):
                return None  # made with another operator token (the server was restarted with a new one)
            return Principal("operator", row["name"])
        if not self.store.viewer_token_valid(parent.removeprefix("viewer:")):
            return None
        return Principal("viewer", row["name"], row["run_id"])

    def authenticate(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
        header = connection.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials:
            return self.check_token(credentials.strip())
        return self.check_session(connection.cookies.get(COOKIE))


def _authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    auth: Auth = connection.app.state.exec_auth
    principal = auth.authenticate(connection)
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
    _authenticate(connection)


async def operator_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    principal = _authenticate(connection)
    if not principal.is_operator:
        raise PermissionDeniedException(
            "read-only viewer: only an operator can start runs, send input or signals, or mint tokens"
        )
