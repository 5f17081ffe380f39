"""The combined server: every app and demo in one process, each under its own prefix."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar, get
from litestar.response import File

from shared.backends import from_url
from shared.hub import Hub
from shared.mount import Mounts
from shared.pages import static_router
from shared.security import SECURITY_HEADERS

from . import basics, bidi

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"


@get("/", include_in_schema=False)
async def index() -> File:
    return File(STATIC / "index.html", content_disposition_type="inline", media_type="text/html")


def create_index_app() -> Litestar:
    return Litestar(
        route_handlers=[index, static_router("", STATIC, name="index-static")],
        response_headers=SECURITY_HEADERS,
        openapi_config=None,
    )


def create_app(data_dir: Path = Path(".data"), backend_url: str | None = None) -> Mounts:
    """All apps on one ASGI callable. Each keeps its own hub, database files and lifespan."""
    data_dir.mkdir(parents=True, exist_ok=True)
    apps: dict[str, Litestar] = {
        "/basics": basics.create_app(Hub(from_url(backend_url))),
        "/bidi": bidi.create_app(Hub(from_url(backend_url))),
    }
    return Mounts(apps, fallback=create_index_app())
