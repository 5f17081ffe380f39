"""Web-security pieces every app uses: response headers, Origin checks, token comparison."""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from urllib.parse import urlsplit

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import ClientException, PermissionDeniedException
from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "COOKIE_PATH",
    "FORM_TYPES",
    "RAW_BODY",
    "SECURITY_HEADERS",
    "RedactSecrets",
    "bearer",
    "check_content_type",
    "check_origin",
    "new_token",
    "origin_check",
    "redact_access_log",
    "tokens_equal",
]

# No inline script anywhere: pages load ES modules from 'self'. Inline style attributes set by
# scripts (element.style) are allowed by CSSOM, so style-src needs no 'unsafe-inline'.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

# Every app's session cookie is for the whole origin: the shared SSE connection (``/sse/mux``,
# issue 15) runs each app's streams as its topics, and a browser sends a cookie scoped to
# ``/chat`` only to ``/chat/...``, never to the mux. (Set for both paths instead, two cookies of
# one name trip up clients, httpx's jar among them.) A cookie's path is not a security boundary
# anyway (RFC 6265, 8.5: any page of the origin can reach it); the names (chat_session,
# exec_session, dashboard_control) keep the apps apart, and each stays HttpOnly and SameSite.
COOKIE_PATH = "/"


def new_token(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)


def bearer(header: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value (scheme in any case, RFC
    7235), or ``None`` when there is none or it is another scheme. The one parser of the project:
    the dashboard's and exec's logins, the metrics token, the bidi session and the mux use it."""
    if header is None:
        return None
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    scheme, _, credentials = text.strip().partition(" ")
    token = credentials.strip()
    return token if scheme.lower() == "bearer" and token else None


def tokens_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing tells an attacker nothing about the token."""
    if not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def check_origin(request: Request | ASGIConnection) -> None:  # type: ignore[type-arg]
    """Refuse a state-changing request that a browser sent from another site.

    Browsers always send ``Origin`` on cross-origin POSTs (and Chromium on same-origin ones too),
    so an ``Origin`` whose host differs from ``Host``, or whose scheme differs from the request's
    (``https://`` page, ``http://`` server: another origin), is a cross-origin request: refused. A request
    without ``Origin`` comes from a non-browser client (curl, our CLI) and is let through; such
    clients still need whatever token the endpoint asks for.
    """
    if request.scope.get("method", "GET") not in _UNSAFE:
        return
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise PermissionDeniedException("cross-site request refused (Sec-Fetch-Site: cross-site)")
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    parts = urlsplit(origin)
    if origin == "null" or parts.netloc.lower() != host.lower():
        raise PermissionDeniedException(f"cross-origin request refused: Origin {origin!r} does not match host {host!r}")
    # The scheme uvicorn saw (from X-Forwarded-Proto only behind a trusted proxy, --proxy-headers).
    scheme = request.scope.get("scheme", "http")
    if parts.scheme.lower() != scheme:
        raise PermissionDeniedException(
            f"cross-origin request refused: Origin {origin!r} is {parts.scheme}://, this server was reached by {scheme}://"
        )


# What a cross-site <form> (or a no-cors fetch) can send without a CORS preflight: the CORS
# "safelisted" body types. A route that reads JSON refuses them, and so does one that takes raw
# bytes, so the Origin check is not the only thing between another site and a state change.
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
# Route ``opt`` key: the route reads its body as raw bytes (an upload), in any type but FORM_TYPES.
RAW_BODY = "raw_body"


class UnsupportedMediaType(ClientException):
    """The body is not of the type the endpoint reads (:func:`check_content_type`)."""

    status_code = 415


def check_content_type(scope: Scope) -> None:
    """Refuse (415) a state-changing request whose body is not of the type its route reads:
    ``application/json`` (or ``*/*+json``), or for a raw-body route anything but a form type."""
    length = ctype = None
    chunked = False
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            length = value
        elif key == b"content-type":
            ctype = value.decode("latin-1").split(";", 1)[0].strip().lower()
        elif key == b"transfer-encoding":
            chunked = True
    if not chunked and (length is None or length.strip() in (b"", b"0")):
        return  # no body: nothing to read, nothing to refuse
    handler = scope.get("route_handler")
    raw = bool(handler is not None and handler.opt.get(RAW_BODY))
    if raw:
        if ctype is None or ctype in FORM_TYPES:
            raise UnsupportedMediaType(
                f"this endpoint takes the raw bytes of a file, not a form (Content-Type {ctype!r}): "
                "send it with Content-Type: application/octet-stream, or the file's own type",
            )
    elif ctype != "application/json" and not (ctype or "").endswith("+json"):
        raise UnsupportedMediaType(f"this endpoint takes application/json (Content-Type was {ctype!r})")


def origin_check(app: ASGIApp) -> ASGIApp:
    """Litestar middleware (``middleware=[origin_check]``): :func:`check_origin` and
    :func:`check_content_type` before the route handler runs; a refusal is the app's JSON 403
    or 415.

    A middleware, not a guard: Litestar calls every guard with a shallow copy of the route
    handler, and that copy alone was 7% of the server's CPU in the correlation benchmark.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] in _UNSAFE:
            check_origin(ASGIConnection(scope))
            check_content_type(scope)
        await app(scope, receive, send)

    return middleware


# A browser's EventSource cannot send headers, so a session stream is resumed with ?token=...
_SECRET_PARAM = re.compile(r"([?&](?:token|access_token)=)[^&#\s\"]*", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Masks ``token=`` query values in log records, such as uvicorn's access log lines
    (``"GET /bidi/events?client_id=a&token=[redacted] HTTP/1.1" 200``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_SECRET_PARAM.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = _SECRET_PARAM.sub(r"\1[redacted]", record.msg)
        return True


def redact_access_log() -> None:
    """Keep tokens out of uvicorn's access log (an ``on_startup`` hook of the apps that take
    ``?token=``). Idempotent; uvicorn configures its loggers before startup hooks run, and
    keeps logger filters when it does."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
