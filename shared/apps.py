"""The app contract: what every app of this project is, so one server runs one app or five alike.

An app is an :class:`App`: a Litestar app (routes, middleware, lifespan) that also says

- ``prefix``: the path it answers under (``/chat``), which :class:`shared.mount.Mounts` mounts it at;
- ``settings``: its options, a frozen dataclass (``ChatSettings``...), as built: read, never patched;
- ``closables``: what the server closes, in this order, the moment it stops, *before* uvicorn waits
  for open requests (SSE streams never end by themselves): things that say goodbye through a hub
  first (routers, the hosts' election), then the hubs, whose streams end with ``shutdown``.

Startup and shutdown are Litestar's own ``on_startup`` / ``on_shutdown`` hooks: they open the stores
and start the hubs, and close what the ``closables`` did not (stores last). :mod:`shared.server`
finds every app's ``closables`` through whatever wraps it (:func:`shutdown_groups`), so ``serve()``,
``Mounts`` and ``--workers`` treat one app and the combined server the same way. See
``docs/app-contract.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from litestar import Litestar

from .errors import JSONRequest, complete_allow, error_handlers
from .openapi import STRICT_STRUCTS, api_docs
from .security import SECURITY_HEADERS, origin_check

__all__ = ["App", "Closable", "app_defaults", "shutdown_groups"]


class Closable(Protocol):
    async def close(self) -> None: ...


class App(Litestar):
    """A Litestar app with the three things the server needs to know about it (see the module).

    ``App(prefix=..., settings=..., closables=[...], **litestar_kwargs)``; everything else is
    Litestar's, so a test client, ``Mounts`` and uvicorn take it as any Litestar app.
    """

    def __init__(self, *, prefix: str, settings: Any, closables: Sequence[Closable] = (), **litestar: Any) -> None:
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(f"an app's prefix is '' or '/name', not {prefix!r}")
        self.prefix = prefix
        self.settings = settings
        self.closables: tuple[Closable, ...] = tuple(closables)
        super().__init__(**litestar)


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


def closables_of(node: Any) -> list[Closable] | None:
    """``node.closables``: an :class:`App`, or a wrapper with streams of its own such as the mux."""
    closables = getattr(node, "closables", None)
    return list(closables) if closables else None


def shutdown_groups(app: Any) -> list[list[Closable]]:
    """Every app's ``closables`` under ``app``, one group per app, each in its order.

    Sees through whatever wraps the apps, at any depth: ASGI middlewares (``.app``, as uvicorn's
    proxy-headers middleware in a worker) and containers (``mounted_apps()``: :class:`shared.mount.
    Mounts`, the mux). An app found nowhere here would keep its streams open at shutdown until
    uvicorn's graceful timeout cancels them, so this walk is the whole of the guarantee.
    """
    groups: list[list[Closable]] = []
    seen: set[int] = set()

    def walk(node: Any, depth: int) -> None:
        if node is None or id(node) in seen or depth > 20:
            return
        seen.add(id(node))
        mounted = getattr(node, "mounted_apps", None)
        if callable(mounted):
            for child in mounted():
                walk(child, depth + 1)
        closables = closables_of(node)
        if closables:
            groups.append(closables)
        elif not callable(mounted):
            walk(getattr(node, "app", None), depth + 1)

    walk(app, 0)
    return groups
