"""One error shape for every app: ``{"status_code": int, "detail": str}`` as ``application/json``,
with ``extra`` when there is more to say (the fields that failed validation, say).

That is what Litestar answers for its own exceptions; this module closes the gaps:

- an error raised by an SSE endpoint (401, 404 before the stream starts) would go out labelled
  ``text/event-stream``, the handler's media type, which no JSON client reads;
- a body that is not UTF-8, or JSON nested deeper than the decoder allows, escapes Litestar's
  JSON decoding as ``UnicodeDecodeError`` / ``RecursionError``: a 500 for the client's mistake;
- a validation error says only "Validation failed for POST /x"; the reason hides in ``extra``;
- an unexpected exception is answered 500 but logged nowhere unless the app runs in debug mode;
- the app's ``response_headers`` (CSP, nosniff...) are not added to error responses;
- a full disk or a read-only data directory (``sqlite3.OperationalError``, ``OSError`` ENOSPC/
  EROFS, from any store) was a 500: it is the server's trouble, not a bug, and the client may
  retry, so it is **503** with ``Retry-After`` (nothing was stored; the client's message is not lost
  if it retries with the same ``client_msg_id``).

Every app passes ``exception_handlers=error_handlers()``, ``request_class=JSONRequest`` and
``middleware=[complete_allow]``, and lists the statuses each handler answers with
``raises=errors(...)``, so that its OpenAPI schema documents them.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from typing import Any

from litestar import MediaType, Request, Response
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import (
    ClientException,
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    SerializationException,
    ServiceUnavailableException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import ASGIApp, ExceptionHandlersMap, Message, Receive, Scope, Send

from .problems import Problem
from .security import SECURITY_HEADERS, UnsupportedMediaType

__all__ = [
    "BadGateway",
    "Conflict",
    "GatewayTimeout",
    "Gone",
    "JSONRequest",
    "Unprocessable",
    "complete_allow",
    "error_handlers",
    "error_response",
    "errors",
]

log = logging.getLogger(__name__)


class Conflict(ClientException):
    """The request clashes with the current state (already closed, already used, name taken)."""

    status_code = 409


class Gone(ClientException):
    status_code = 410


class Unprocessable(ClientException):
    """Well-formed, but breaks a documented rule (a limit, a required confirmation)."""

    status_code = 422


class BadGateway(HTTPException):
    """The client that was asked answered with an error."""

    status_code = 502


class GatewayTimeout(HTTPException):
    """The client that was asked did not answer in time."""

    status_code = 504


# One exception class per status code: Litestar documents several classes of one status as a
# ``oneOf`` of identical schemas, which no response can match (``oneOf`` means exactly one).
_BY_STATUS: dict[int, type[HTTPException]] = {
    cls.status_code: cls
    for cls in (
        ValidationException,
        NotAuthorizedException,
        PermissionDeniedException,
        NotFoundException,
        MethodNotAllowedException,
        Conflict,
        Gone,
        RequestEntityTooLarge,
        UnsupportedMediaType,
        Unprocessable,
        TooManyRequestsException,
        BadGateway,
        ServiceUnavailableException,
        GatewayTimeout,
    )
}


def errors(*status_codes: int) -> list[type[HTTPException]]:
    """``raises=errors(403, 404)``: the error statuses a handler answers, for its OpenAPI schema.

    400 is added by Litestar itself for every handler that takes parameters or a body.
    """
    unknown = sorted(set(status_codes) - set(_BY_STATUS))
    if unknown:
        raise ValueError(f"no error class for status {unknown}: add one to shared.errors._BY_STATUS")
    return [_BY_STATUS[code] for code in status_codes]


class JSONRequest(Request[Any, Any, Any]):
    """A request whose ``json()`` answers every undecodable body with a 400 that says why."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except SerializationException as exc:
            reason = str(exc).removeprefix("JSON is malformed: ")  # msgspec's wording
            raise ValidationException(f"the body is not valid JSON: {reason}") from None
        except UnicodeDecodeError as exc:
            raise ValidationException(f"the body is not valid UTF-8 (byte {exc.start}): JSON must be UTF-8") from None
        except RecursionError:
            # msgspec stops at a fixed depth; nothing we accept nests more than a few levels.
            raise ValidationException("the JSON body is nested too deeply") from None


def _explain(exc: ValidationException) -> str:
    """Litestar's "Validation failed for POST /x", followed by what failed."""
    reasons: list[str] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        key, message = item.get("key"), str(item.get("message", ""))
        if key == "data" and message == "'data'":
            reasons.append("the request body is missing: send a JSON object")
        elif key and key != "data":
            reasons.append(f"{key}: {message}")
        elif message:
            reasons.append(message)
    return f"{exc.detail}: {'; '.join(reasons)}" if reasons else exc.detail


def _too_large(request: Request[Any, Any, Any]) -> str:
    """Litestar's bare "Request Entity Too Large", with the limit that was passed."""
    try:
        limit = request.route_handler.resolve_request_max_body_size()
    except (AttributeError, KeyError):
        limit = None
    if not limit:
        return "the request body is too large"
    size = f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"
    return f"the request body is too large: this endpoint takes at most {size}"


STORAGE_RETRY_AFTER_S = 30

# SQLite's words for the same troubles (its error codes are not on the exception in 3.11's
# module for every path, its messages are stable): SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR.
_SQLITE_STORAGE = {
    "database or disk is full": "the server's disk is full",
    "attempt to write a readonly database": "the server's data directory is read-only",
    "disk i/o error": "the server's disk failed a write",
}
_OS_STORAGE = {
    errno.ENOSPC: "the server's disk is full",
    errno.EDQUOT: "the server's disk quota is used up",
    errno.EROFS: "the server's data directory is read-only",
}


def storage_trouble(exc: BaseException) -> str | None:
    """What a full or read-only disk looks like to a user, if ``exc`` (or its cause) is one."""
    seen: BaseException | None = exc
    for _ in range(3):  # the exception, then what it was raised from
        if seen is None:
            return None
        if isinstance(seen, sqlite3.OperationalError):
            text = str(seen).lower()
            for words, says in _SQLITE_STORAGE.items():
                if words in text:
                    return says
        elif isinstance(seen, OSError) and seen.errno in _OS_STORAGE:
            return _OS_STORAGE[seen.errno]
        seen = seen.__cause__ or seen.__context__
    return None


def error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """The JSON answer for any exception: its status and detail, or a logged 500."""
    if isinstance(exc, HTTPException):
        status, detail, headers, extra = exc.status_code, exc.detail, exc.headers, exc.extra
        if isinstance(exc, ValidationException):
            detail = _explain(exc)
        elif isinstance(exc, RequestEntityTooLarge) and detail == RequestEntityTooLarge.detail:
            detail = _too_large(request)
    elif isinstance(exc, Problem):
        # The core's own errors (sessions, requests, routing): mapped to HTTP here, and only here.
        status, detail, headers, extra = exc.status_code, exc.detail, exc.headers, exc.extra
    elif (trouble := storage_trouble(exc)) is not None:
        log.error("%s %s: %s (%s)", request.method, request.url.path, trouble, exc)  # one line, no traceback
        status, extra = 503, None
        detail = f"{trouble}: nothing was stored; try again later"
        headers = {"Retry-After": str(STORAGE_RETRY_AFTER_S)}
    else:
        log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        status, detail, headers, extra = 500, "Internal Server Error", None, None
    content: dict[str, Any] = {"status_code": status, "detail": detail}
    if extra is not None:
        content["extra"] = extra
    # An app's response_headers never reach an exception's response: add them here.
    headers = {**SECURITY_HEADERS, **(headers or {})}
    return Response(content, status_code=status, headers=headers, media_type=MediaType.JSON)


def complete_allow(app: ASGIApp) -> ASGIApp:
    """Litestar middleware (``middleware=[complete_allow]``): list every method of a path in the
    ``Allow`` of an OPTIONS answer. Litestar 2 lists only those of the first handler registered
    for the path (litestar-org/litestar#4169, fixed in v3), so ``OPTIONS /basics/interval`` said
    POST, not GET. Only an OPTIONS request's ``send`` is wrapped: the others pay nothing."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "OPTIONS":
            await app(scope, receive, send)
            return

        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start":
                _complete_allow(message, scope)
            await send(message)

        await app(scope, receive, send_with_allow)

    return middleware


def _complete_allow(message: Message, scope: Scope) -> None:
    handler = scope.get("route_handler")
    if handler is None:
        return
    methods: set[str] = set()
    for path in handler.paths:
        methods.update(scope["litestar_app"].route_handler_method_map.get(path, ()))
    if methods:
        MutableScopeHeaders.from_message(message)["Allow"] = ", ".join(sorted(methods))


def error_handlers() -> ExceptionHandlersMap:
    """``Litestar(exception_handlers=error_handlers())``; a new dict each time, as Litestar adds to it.

    Litestar picks the most specific class in an exception's MRO, so an app's own handlers
    (``{**error_handlers(), RuleError: ...}``) still win for their exceptions."""
    return {HTTPException: error_response, Exception: error_response}
