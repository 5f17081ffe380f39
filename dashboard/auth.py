"""Who may act: the holder of the control token, as ``Authorization: Bearer`` or a login cookie.

The cookie does not hold the token itself but an HMAC of it, so a leaked cookie is not the token
(it cannot be used as a Bearer), and changing the token logs every browser out. The token is
never accepted in a query string: URLs end up in logs and browser history.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict, deque
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
MAX_TRACKED_ADDRESSES = 10_000


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
        # Wrong log-ins per client address (issue 14.12): a flood from one address must not lock
        # out the operator at another. Bounded: the oldest addresses are forgotten first.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
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

    def login(self, given: Any, secure: bool, address: str = "unknown") -> Cookie:
        """Check a token typed into the page; the cookie to set. 401 if wrong, 429 when the same
        client address got ``max_failures`` wrong within the window (other addresses are not held up)."""
        now = time.monotonic()
        failures = self._failures.get(address)
        if failures is not None:
            while failures and failures[0] < now - self._window:
                failures.popleft()
            if len(failures) >= self._max_failures:
                wait = max(1, int(failures[0] + self._window - now) + 1)
                raise ClientException(
                    status_code=429,
                    detail=f"too many wrong tokens from {address}; try again in {wait} s "
                    "(log-ins are throttled per client address)",
                    headers={"Retry-After": str(wait)},
                )
        if not isinstance(given, str) or not tokens_equal(given.strip(), self.token):
            if failures is None:
                failures = self._failures[address] = deque()
                while len(self._failures) > MAX_TRACKED_ADDRESSES:
                    self._failures.popitem(last=False)
            self._failures.move_to_end(address)
            failures.append(now)
            raise NotAuthorizedException("wrong control token")
        return Cookie(key=COOKIE, value=self._cookie, path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure)

    @staticmethod
    def logout_cookie() -> Cookie:
        return Cookie(key=COOKIE, value="", path=COOKIE_PATH, httponly=True, samesite="strict", max_age=0)
