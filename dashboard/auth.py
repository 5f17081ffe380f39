"""Who may act: the holder of the control token, as ``Authorization: Bearer`` or a login session.

Logging in with the token on the page makes a login session (``dashboard.sessions``): the
HttpOnly cookie holds a random secret, new for every log-in, that the server looks up on each
request. It is not the token (it cannot be used as a Bearer), it is different in every browser,
it expires, and logging out revokes it on every instance at once (issue 14.1). Each session is
bound to the token it was made with: start the server with a new token and old sessions end. The
token is never accepted in a query string: URLs end up in logs and browser history.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, Literal

from litestar import Request
from litestar.datastructures import Cookie
from litestar.exceptions import ClientException, NotAuthorizedException

from shared.security import COOKIE_PATH, bearer, new_token, tokens_equal
from shared.throttle import FailureThrottle

from .sessions import LoginSession, LoginSessions, session_key

__all__ = ["COOKIE", "Actor", "ControlAuth"]

COOKIE = "dashboard_control"
MIN_TOKEN_LENGTH = 8
MAX_COOKIE_LENGTH = 200  # ours are 43 characters; anything much longer is not one


@dataclass(frozen=True, slots=True)
class Actor:
    via: Literal["bearer", "cookie"]
    address: str
    session: str | None = None  # the login session's key (a hash, not the cookie) when via a cookie

    def to_json(self) -> dict[str, Any]:
        return {"via": self.via, "address": self.address, "session": self.session}

    @classmethod
    def from_json(cls, data: Any) -> Actor:
        """An actor sent by another instance (``to_json``)."""
        d = data if isinstance(data, dict) else {}
        session = d.get("session")
        return cls(
            "bearer" if d.get("via") == "bearer" else "cookie",
            str(d.get("address", "unknown")),
            session if isinstance(session, str) else None,
        )

    @property
    def ref(self) -> str:
        """Who asked, for the audit log: ``bearer`` or ``login <short session id>``."""
        return "bearer" if self.via == "bearer" else f"login {(self.session or '?')[:12]}"

    @property
    def label(self) -> str:
        how = "Bearer token" if self.via == "bearer" else f"browser login {(self.session or '?')[:12]}"
        return f"{how} from {self.address}"


class ControlAuth:
    """The control token (given, or generated here), the login sessions, and the checks that use them."""

    def __init__(
        self,
        token: str | None = None,
        *,
        sessions: LoginSessions,
        max_failures: int = 10,
        failure_window: float = 60.0,
    ) -> None:
        if token is not None and len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the control token must be at least {MIN_TOKEN_LENGTH} characters long")
        self.generated = token is None
        self.token = token or new_token()
        self.sessions = sessions
        # Kept with each session, so a session made with another token is refused.
        self._fp = hmac.new(self.token.encode(), b"dashboard login session v2", hashlib.sha256).hexdigest()[:32]
        # Wrong log-ins per client address (issue 14.12): a flood from one address must not lock
        # out the operator at another. Bounded: the oldest addresses are forgotten first.
        self.throttle = FailureThrottle(max_failures, failure_window)

    async def session_of(self, request: Request[Any, Any, Any]) -> LoginSession | None:
        """The live login session the request's cookie names, or ``None``."""
        secret = request.cookies.get(COOKIE)
        if not secret or len(secret) > MAX_COOKIE_LENGTH:
            return None
        return await self.live(session_key(secret))

    async def live(self, key: str) -> LoginSession | None:
        """The login session with this key if it is live and made with this token."""
        found = await self.sessions.get(key)
        if found is not None and not tokens_equal(found.token_fp, self._fp):
            await self.sessions.revoke(key)
            return None
        return found

    async def actor(self, request: Request[Any, Any, Any]) -> Actor | None:
        """The authorised caller of this request, or ``None`` (view-only)."""
        address = request.client.host if request.client else "unknown"
        if tokens_equal(bearer(request.headers.get("authorization")), self.token):
            return Actor("bearer", address)
        session = await self.session_of(request)
        if session is not None:
            return Actor("cookie", address, session.key)
        return None

    async def require(self, request: Request[Any, Any, Any]) -> Actor:
        actor = await self.actor(request)
        if actor is None:
            if request.cookies.get(COOKIE):
                detail = (
                    "this dashboard login has ended (logged out, expired, or the control token changed): "
                    "log in again on the page, or send 'Authorization: Bearer <token>'"
                )
            else:
                detail = (
                    "control actions need the control token: log in on the page, "
                    "or send 'Authorization: Bearer <token>'"
                )
            raise NotAuthorizedException(detail, headers={"WWW-Authenticate": 'Bearer realm="dashboard"'})
        return actor

    def _throttle(self, address: str) -> None:
        wait = self.throttle.wait(address)
        if wait is not None:
            raise ClientException(
                status_code=429,
                detail=f"too many wrong tokens from {address}; try again in {wait} s "
                "(log-ins are throttled per client address)",
                headers={"Retry-After": str(wait)},
            )

    async def login(self, given: Any, secure: bool, address: str = "unknown", old: str | None = None) -> Cookie:
        """Check a token typed into the page; the cookie of a new login session. 401 if wrong, 429
        when the same client address got ``max_failures`` wrong within the window (other addresses
        are not held up). ``old``, the cookie the browser had, is revoked: a log-in never keeps a
        session someone else may have planted or copied."""
        self._throttle(address)
        if not isinstance(given, str) or not tokens_equal(given.strip(), self.token):
            self.throttle.failed(address)
            raise NotAuthorizedException("wrong control token")
        if old and len(old) <= MAX_COOKIE_LENGTH:
            await self.sessions.revoke(session_key(old))
        secret = new_token(32)
        created = time.time()
        await self.sessions.add(LoginSession(session_key(secret), self._fp, created, created, address))
        return Cookie(
            key=COOKIE,
            value=secret,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=secure,
            max_age=int(self.sessions.max_age),
        )

    async def logout(self, request: Request[Any, Any, Any]) -> bool:
        """Revoke the request's login session (on every instance sharing the store)."""
        secret = request.cookies.get(COOKIE)
        if not secret or len(secret) > MAX_COOKIE_LENGTH:
            return False
        return await self.sessions.revoke(session_key(secret))

    @staticmethod
    def logout_cookie() -> Cookie:
        return Cookie(key=COOKIE, value="", path=COOKIE_PATH, httponly=True, samesite="strict", max_age=0)
