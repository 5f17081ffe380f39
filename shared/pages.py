"""Serving an app's page and static front end together with the shared browser helper."""

from __future__ import annotations

from pathlib import Path

from litestar import get
from litestar.handlers import HTTPRouteHandler
from litestar.response import File
from litestar.router import Router
from litestar.static_files import create_static_files_router

from .openapi import FileOperation

__all__ = ["SHARED_STATIC", "page_route", "static_router", "vendor_router"]

SHARED_STATIC = Path(__file__).parent / "static"
NODE_MODULES = Path(__file__).resolve().parent.parent / "node_modules"


def static_router(prefix: str, app_static: Path, *, name: str) -> Router:
    """``{prefix}/static/...`` from the app's folder, falling back to the shared one (``sse.js``)."""
    return create_static_files_router(
        path=f"{prefix}/static",
        directories=[app_static, SHARED_STATIC],
        name=name,
        include_in_schema=False,
    )


def vendor_router(prefix: str, *, name: str) -> Router:
    """``{prefix}/vendor/<package>/<file>`` straight from ``node_modules`` (installed by ``npm ci``):
    front-end libraries are served as published, with no build step."""
    return create_static_files_router(
        path=f"{prefix}/vendor",
        directories=[NODE_MODULES],
        name=name,
        include_in_schema=False,
    )


def page_route(prefix: str, html: Path, what: str = "page") -> HTTPRouteHandler:
    """``GET {prefix}/``: the app's HTML page ``html``, documented in its OpenAPI as "The
    ``what`` (HTML; its scripts and styles are under ``{prefix}/static/``)"."""
    description = f"The {what} (HTML; its scripts and styles are under ``{prefix}/static/``)."

    @get(f"{prefix}/", media_type="text/html", operation_class=FileOperation, description=description)
    async def page() -> File:
        return File(html, content_disposition_type="inline", media_type="text/html")

    return page
