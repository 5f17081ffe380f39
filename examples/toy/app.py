"""``create_app()``: the poll under ``/poll/``, one :class:`shared.apps.App` like every other app."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from litestar.datastructures import State

from shared.apps import App, app_defaults
from shared.backends import from_url
from shared.health import health_routes
from shared.hub import Hub, HubSettings
from shared.pages import page_route, static_router

from . import routes_poll
from .poll import Poll
from .settings import PollSettings

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"


def create_app(
    settings: PollSettings | None = None,
    *,
    backend: str | None = None,
    hub_settings: HubSettings | None = None,
    **options: Any,
) -> App:
    """The poll (``options``: fields of ``settings`` to change, e.g. ``options=("a", "b")``)."""
    settings = dataclasses.replace(settings or PollSettings(), **options)
    hub = Hub(from_url(backend), hub_settings)
    return App(
        prefix="/poll",
        settings=settings,
        closables=[hub],  # its streams end with `shutdown` as soon as the server stops
        route_handlers=[
            *health_routes(),
            page_route("/poll", STATIC / "poll.html", "poll page"),
            *routes_poll.handlers,
            static_router("/poll", STATIC, name="poll-static"),  # falls back to shared/static (sse.js)
        ],
        state=State({"poll": Poll(settings, hub)}),
        on_startup=[hub.start],
        on_shutdown=[hub.close],
        **app_defaults("/poll", "poll", "A live poll: votes over POST, the tally over SSE.", max_body=4096),
    )
