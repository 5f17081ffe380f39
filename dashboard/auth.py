"""Who may act: the holder of the control token, as ``Authorization: Bearer`` or a login cookie.

The cookie does not hold the token itself but an HMAC of it, so a leaked cookie is not the token
(it cannot be used as a Bearer), and changing the token logs every browser out. The token is
never accepted in a query string: URLs end up in logs and browser history.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from litestar import Request
from litestar.datastructures import Cookie
from litestar.exceptions import ClientException, NotAuthorizedException

from shared.security import new_token, tokens_equal

__all__ = ["COOKIE", "Actor", "ControlAuth"]

COOKIE = "dashboard_control"
COOKIE_PATH = "/dashboard"
MIN_TOKEN_LENGTH = 8


@dataclass(frozen=True, slots=True)
class Actor:
    via: Literal["bearer", "cookie"]
    address: str

    def to_json(self) -> dict[str, Any]:
        return {"via": self.via, "address": self.address}

    @classmethod
    def from_json(cls, data: Any) -> Actor:
        """An actor sent by another instance (``to_json``)."""
        d = data if isinstance(data, dict) else {}
        return cls("bearer" if d.get("via") == "bearer" else "cookie", str(d.get("address", "unknown")))

    @property
    def label(self) -> str:
        how = "Bearer token" if self.via == "bearer" else "browser login"
        return f"{how} from {self.address}"


class ControlAuth:
    """The control token (given, or generated here) and the checks that use it."""

    def __init__(self, token: str | None = None, *, max_failures: int = 10, failure_window: float = 60.0) -> None:
        if token is not None and len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the control token must be at least {MIN_TOKEN_LENGTH} characters long")
        self.generated = token is None
        self.token = token or new_token()
        self._cookie = hmac.new(self.token.encode(), b"dashboard login cookie v1", hashlib.sha256).hexdigest()
        self._failures: deque[float] = deque()
        self._max_failures = max_failures
        self._window = failure_window

    def actor(self, request: Request[Any, Any, Any]) -> Actor | None:
        """The authorised caller of this request, or ``None`` (view-only)."""
        address = request.client.host if request.client else "unknown"
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and tokens_equal(auth[7:].strip(), self.token):
            return Actor("bearer", address)
        if tokens_equal(request.cookies.get(COOKIE), self._cookie):
            return Actor("cookie", address)
        return None

    def require(self, request: Request[Any, Any, Any]) -> Actor:
        actor = self.actor(request)
        if actor is None:
            raise NotAuthorizedException(
                "control actions need the control token: log in on the page, or send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": 'Bearer realm="dashboard"'},
            )
        return actor

    def login(self, given: Any, secure: bool) -> Cookie:
        """Check a token typed into the page; the cookie to set. 401 if wrong, 429 when hammered."""
        now = time.monotonic()
        while self._failures and self._failures[0] < now - self._window:
            self._failures.popleft()
        if len(self._failures) >= self._max_failures:
            raise ClientException(
                status_code=429,
                detail=f"too many wrong tokens; try again in {self._window:g} s",
                headers={"Retry-After": str(int(self._window))},
            )
        if not isinstance(given, str) or not tokens_equal(given.strip(), self.token):
            self._failures.append(now)
            raise NotAuthorizedException("wrong control token")
        return Cookie(key=COOKIE, value=self._cookie, path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure)

    @staticmethod
    def logout_cookie() -> Cookie:
        return Cookie(key=COOKIE, value="", path=COOKIE_PATH, httponly=True, samesite="strict", max_age=0)
