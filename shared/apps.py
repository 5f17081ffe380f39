"""The settings every app of this project shares, so they are written (and changed) once."""

from __future__ import annotations

from typing import Any

from .errors import JSONRequest, complete_allow, error_handlers
from .openapi import STRICT_STRUCTS, api_docs
from .security import SECURITY_HEADERS, origin_check

__all__ = ["app_defaults"]


def app_defaults(
    prefix: str,
    name: str,
    description: str,
    *,
    max_body: int,
    exception_handlers: dict[Any, Any] | None = None,
) -> dict[str, Any]:
    """``Litestar(...)`` keyword arguments: Origin checks, security headers, one JSON error shape,
    a body limit, the OpenAPI document at ``{prefix}/schema/openapi.json`` and strict structs.

    ``exception_handlers`` adds app-specific handlers on top of the shared ones.
    """
    return {
        # Middleware, not guards or before_send hooks: each of those costs per request (see each).
        "middleware": [origin_check, complete_allow],
        "response_headers": SECURITY_HEADERS,
        "exception_handlers": {**error_handlers(), **(exception_handlers or {})},
        "request_class": JSONRequest,
        "request_max_body_size": max_body,
        "openapi_config": api_docs(prefix, name, description),
        "plugins": [STRICT_STRUCTS],
    }
