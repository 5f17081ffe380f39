"""The combined server: every app and demo in one process, each under its own prefix."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from litestar import Litestar, get
from litestar.response import File

import chat
import dashboard
import remote_exec
from chat import ChatSettings
from dashboard.settings import DashboardSettings
from remote_exec.settings import ExecSettings
from shared.backends import from_url
from shared.datadir import private_dir
from shared.errors import complete_allow, error_handlers
from shared.health import health_routes
from shared.hub import Hub
from shared.mount import Mounts
from shared.pages import static_router
from shared.security import SECURITY_HEADERS

from . import basics, bidi

__all__ = ["Settings", "create_app", "login_lines"]

STATIC = Path(__file__).parent / "static"


@get("/", include_in_schema=False)
async def index() -> File:
    return File(STATIC / "index.html", content_disposition_type="inline", media_type="text/html")


def create_index_app() -> Litestar:
    return Litestar(
        route_handlers=[*health_routes(), index, static_router("", STATIC, name="index-static")],
        response_headers=SECURITY_HEADERS,
        exception_handlers=error_handlers(),
        middleware=[complete_allow],
        openapi_config=None,
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """The combined server's options: where its files go, its backend, and each app's own settings."""

    data_dir: Path = Path(".data")
    backend_url: str | None = None
    chat: ChatSettings = field(default_factory=ChatSettings)
    exec: ExecSettings = field(default_factory=ExecSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)


def create_app(settings: Settings | None = None) -> Mounts:
    """All apps on one ASGI callable, each at its own prefix with its own hub, files and lifespan
    (every one an :class:`shared.apps.App`: the server closes each as it would alone)."""
    s = settings or Settings()
    private_dir(s.data_dir)
    apps = [
        basics.create_app(Hub(from_url(s.backend_url))),
        bidi.create_app(Hub(from_url(s.backend_url))),
        # memory:// keeps the chat in SQLite (one process); redis:// puts all of it in Redis.
        chat.create_app(s.data_dir, s.chat, backend=s.backend_url),
        remote_exec.create_app(s.data_dir, s.exec, backend=s.backend_url),
        dashboard.create_app(s.data_dir, s.dashboard, backend=s.backend_url),
    ]
    return Mounts(apps, fallback=create_index_app())


# What `python -m showcase` lists at start, in the order of the index page's nav.
PAGES = (
    ("", "index: every pattern compared"),
    ("/basics", "numbered ticks; connect, disconnect, resume"),
    ("/bidi", "the browser answers the server's requests"),
    ("/chat", "rooms, history, presence, typing"),
    ("/dashboard", "live system metrics and process actions (token)"),
    ("/exec", "run commands, stream their output (token)"),
)


def login_lines(app: Mounts, base_url: str, *, generated: Collection[str] = ()) -> list[str]:
    """What to print at start: where everything is, and how to sign in to the guarded apps.
    ``generated``: the apps (``"exec"``, ``"dashboard"``) whose token the caller made up."""
    lines = [f"Serving all apps on {base_url}/"]
    width = max(len(base_url + prefix) for prefix, _ in PAGES) + 1
    lines += [
        f"  {base_url + prefix + '/':<{width}}  {what}"
        for prefix, what in PAGES
        if not prefix or app.app_at(prefix) is not None
    ]
    exec_app = app.app_at("/exec")
    if exec_app is not None:
        lines += remote_exec.login_lines(exec_app, base_url, generated="exec" in generated)
    dash_app = app.app_at("/dashboard")
    if dash_app is not None:
        lines += dashboard.login_lines(dash_app, base_url, generated="dashboard" in generated)
    return lines
