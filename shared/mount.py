"""One ASGI app made of several: each app keeps its own routes, middleware and lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from litestar import Litestar

from .apps import App

__all__ = ["Mounts"]

Scope = dict[str, Any]


class Mounts:
    """Dispatch by path prefix to whole apps; the apps see the full path (they carry their prefix).

    ``apps``: :class:`shared.apps.App` objects, each mounted at its own ``prefix`` (or a mapping of
    prefix to any Litestar app). Each app's lifespan (startup and shutdown hooks) runs inside this
    one's; the server closes each app's ``closables`` as it would for that app served alone.
    """

    def __init__(self, apps: Iterable[App] | Mapping[str, Litestar], fallback: Litestar) -> None:
        pairs: list[tuple[str, Litestar]] = (
            list(apps.items()) if isinstance(apps, Mapping) else [(app.prefix, app) for app in apps]
        )
        prefixes = [prefix for prefix, _ in pairs]
        if len(set(prefixes)) != len(prefixes) or "" in prefixes:
            raise ValueError(f"each mounted app needs its own non-empty prefix, not {prefixes}")
        self._apps = sorted(pairs, key=lambda kv: -len(kv[0]))
        self._fallback = fallback

    def app_at(self, prefix: str) -> Litestar | None:
        return next((app for p, app in self._apps if p == prefix), None)

    def app_for(self, path: str) -> Litestar:
        """The app that answers ``path`` (as :meth:`__call__` picks it)."""
        for prefix, app in self._apps:
            if path == prefix or path.startswith(prefix + "/"):
                return app
        return self._fallback

    def mounted_apps(self) -> list[Litestar]:
        return [app for _, app in self._apps] + [self._fallback]

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope.get("path", "")
        for prefix, app in self._apps:
            if path == prefix or path.startswith(prefix + "/"):
                await app(scope, receive, send)  # type: ignore[arg-type]
                return
        await self._fallback(scope, receive, send)  # type: ignore[arg-type]

    async def _lifespan(self, receive: Any, send: Any) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        async with contextlib.AsyncExitStack() as stack:
            try:
                for app in self.mounted_apps():
                    await stack.enter_async_context(app.lifespan())
            except BaseException as exc:
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                raise
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
