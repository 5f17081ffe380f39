"""Who is asking: the operator token, viewer tokens, and the login cookie.

- The **operator** token (``--token`` / ``REMOTE_EXEC_TOKEN`` / generated) may do everything.
- **Viewer** tokens are minted by an operator, stored only as hashes, expire, can be revoked, and
  may be limited to one run. Viewers can watch; they cannot start runs or send input or signals.
- Either is sent as ``Authorization: Bearer <token>``, or exchanged once at ``POST /exec/login``
  for an HttpOnly, SameSite=Strict cookie holding a random session id (not the token), so the
  page's ``EventSource`` is authenticated without the token ever being in a URL.

An operator session is bound to the operator token it was made with: start the server with a new
token and old sessions stop working. A viewer session ends with its viewer token.

With several instances on separate data dirs, a viewer token or session another instance made is
looked up there (``ask``): only its hash travels, and that instance stays the one that can revoke it.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Awaitable, Callable
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
        # Several instances: asks the others to resolve a query of :meth:`lookup`.
        self.ask: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]] | None = None

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
        return self._session(_hash(sid)) if sid else None

    def _session(self, sid_hash: str) -> Principal | None:
        row = self.store.get_session(sid_hash)
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

    # -- several instances ---------------------------------------------------------------------

    async def authenticate_anywhere(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
        """:meth:`authenticate`, then (several instances) the viewer token or session of another."""
        principal = self.authenticate(connection)
        if principal is not None or self.ask is None:
            return principal
        header = connection.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials:
            token = credentials.strip()
            query = {"token_hash": _hash(token)} if token.startswith(VIEWER_PREFIX) else None
        else:
            sid = connection.cookies.get(COOKIE)
            query = {"sid_hash": _hash(sid)} if sid else None
        return _principal(await self.ask(query)) if query is not None else None

    async def login_anywhere(self, token: str, name: str | None) -> tuple[Principal, str]:
        """:meth:`login`; a viewer token of another instance makes its session there."""
        if self.ask is None or not token.startswith(VIEWER_PREFIX) or self.check_token(token) is not None:
            return self.login(token, name)
        sid = new_token(32)
        principal = _principal(await self.ask({"token_hash": _hash(token), "login": _hash(sid)}))
        if principal is None:
            raise NotAuthorizedException("wrong or expired token", headers={"WWW-Authenticate": "Bearer"})
        return principal, sid

    async def logout_anywhere(self, sid: str | None) -> None:
        """:meth:`logout`, and (several instances) wherever the session was made."""
        self.logout(sid)
        if sid and self.ask is not None:
            await self.ask({"logout": _hash(sid)})

    def lookup(self, query: dict[str, Any]) -> dict[str, Any] | None:
        """Answer another instance: who a viewer token (by hash) or a session (by hash) is, if
        it is ours; with ``login``, also make a session (by the hash of its id) for that token;
        ``logout`` ends a session (by hash)."""
        if isinstance(query.get("logout"), str):
            self.store.delete_session(query["logout"])
            return None
        token_hash, sid_hash = query.get("token_hash"), query.get("sid_hash")
        if isinstance(sid_hash, str):
            found = self._session(sid_hash)
            return None if found is None else {"role": found.role, "name": found.name, "run_id": found.run_id}
        if not isinstance(token_hash, str):
            return None
        row = self.store.find_viewer_token(token_hash)
        if row is None:
            return None
        principal = Principal("viewer", f"viewer:{row['label']}", row["run_id"])
        login = query.get("login")
        if isinstance(login, str):
            parent = f"viewer:{row['id']}"
            self.store.add_session(
                login, "viewer", principal.name, principal.run_id, parent, time.time() + SESSION_TTL_S
            )
        return {"role": principal.role, "name": principal.name, "run_id": principal.run_id}


def _principal(answer: dict[str, Any] | None) -> Principal | None:
    role = answer.get("role") if answer else None
    if answer is None or role not in ("operator", "viewer"):
        return None
    if role == "operator":  # a session another instance made (and checked against the same token)
        return Principal("operator", str(answer.get("name", "operator")))
    run_id = answer.get("run_id")
    return Principal("viewer", str(answer.get("name", "viewer")), run_id if isinstance(run_id, str) else None)


async def _authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    auth: Auth = connection.app.state.exec_auth
    principal = await auth.authenticate_anywhere(connection)
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
