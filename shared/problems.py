"""The errors of the framework-free core: sessions, pending requests, routing between instances.

Each carries the HTTP status a client should get and a detail that says what to do, but nothing
here imports a web framework: ``shared.errors`` (the one glue module) answers any
:class:`Problem` as ``{"status_code", "detail"[, "extra"]}`` JSON with its headers, as it does
Litestar's own exceptions. Errors also cross instances as data (``shared.routing``): a remote
handler's error comes back as a :class:`Problem` with the same status, detail and headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "Forbidden",
    "InUse",
    "Invalid",
    "NoHandler",
    "NotFound",
    "PeerFailed",
    "PeerTimeout",
    "Problem",
    "TooMany",
    "Unavailable",
    "problem_of",
]


class Problem(Exception):
    """An error to tell the client about: ``status_code``, ``detail``, ``headers``, ``extra``."""

    status_code: int = 500

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        self.headers: dict[str, str] = dict(headers or {})
        self.extra = extra

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status_code}, {self.detail!r})"


class Invalid(Problem, ValueError):
    """The request is malformed (a client id with characters that are not allowed): 400."""

    status_code = 400


class Forbidden(Problem):
    """The credential does not allow it (a wrong session token): 403."""

    status_code = 403


class NotFound(Problem, LookupError):
    """No such thing here (a client this instance does not hold): 404."""

    status_code = 404


class InUse(Problem):
    """It clashes with what exists (a client id held by another connection, an id sent twice): 409."""

    status_code = 409


class TooMany(Problem):
    """A cap is reached (sessions, pending requests); ``headers`` has ``Retry-After``: 429."""

    status_code = 429


class Unavailable(Problem):
    """Not now: the server is shutting down, an instance or the backend is unreachable: 503."""

    status_code = 503

    def __init__(self, detail: str, *, retry_after: int = 1, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": str(retry_after)})
        super().__init__(detail, **kwargs)


class NoHandler(Problem):
    """No instance handler for a routed method: 501."""

    status_code = 501


class PeerFailed(Problem):
    """Another instance failed while serving a call (a bug there): 502."""

    status_code = 502


class PeerTimeout(Problem, TimeoutError):
    """Another instance did not answer a call in time: 504."""

    status_code = 504


def problem_of(exc: BaseException) -> Problem | None:
    """``exc`` as a :class:`Problem` if it carries an HTTP status (a ``Problem``, or an app's own
    framework exception with ``status_code`` and ``detail``), else ``None``."""
    if isinstance(exc, Problem):
        return exc
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        return None
    headers = getattr(exc, "headers", None)
    extra = getattr(exc, "extra", None)
    return Problem(
        str(getattr(exc, "detail", "") or exc),
        status_code=status,
        headers=dict(headers) if isinstance(headers, Mapping) else None,
        extra=extra if isinstance(extra, dict) else None,
    )
