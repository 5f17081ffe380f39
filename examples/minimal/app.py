"""The smallest app on ``shared``: ``GET /minimal/events`` streams what ``POST /minimal/publish`` sends.

Try it::

    python -m examples.minimal --port 8000
    curl -N localhost:8000/minimal/events              # one terminal: the stream
    curl -H 'content-type: application/json' -d '{"text": "hi"}' localhost:8000/minimal/publish

A stream that reconnects with ``Last-Event-ID`` (every SSE client does) gets what it missed, and
when the server stops every open stream ends with a ``shutdown`` event telling it to come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.response import Stream

from shared.apps import App, app_defaults
from shared.backends import from_url
from shared.errors import Unprocessable, errors
from shared.health import health_routes
from shared.hub import Hub
from shared.responses import last_event_id, sse_response

__all__ = ["MinimalSettings", "create_app"]

TOPIC = "messages"


@dataclass(frozen=True, slots=True)
class MinimalSettings:
    max_text: int = 1000  # characters in one message; more is a 422


class Message(msgspec.Struct, forbid_unknown_fields=True):
    text: str


@get("/minimal/events", media_type="text/event-stream", raises=errors(429, 503))
async def events(request: Request[Any, Any, Any], state: State) -> Stream:
    """Every ``message`` event, live; from ``Last-Event-ID`` on when the client resumes."""
    return sse_response(state.hub, TOPIC, last_id=last_event_id(request))


@post("/minimal/publish", status_code=200, raises=errors(413, 422))
async def publish(data: JSONBody[Message], state: State) -> dict[str, str | None]:
    """Send ``{"text": ...}`` to every open stream; answers the event's id."""
    settings: MinimalSettings = state.settings
    if not 1 <= len(data.text) <= settings.max_text:
        raise Unprocessable(f"text must be 1 to {settings.max_text} characters")
    event_id = await state.hub.publish_json(TOPIC, {"text": data.text}, event="message")
    return {"id": event_id}


def create_app(settings: MinimalSettings | None = None, *, backend: str | None = None) -> App:
    """The app (``backend``: ``memory://``, the default, or ``redis://...`` for several processes)."""
    settings = settings or MinimalSettings()
    hub = Hub(from_url(backend))
    return App(
        prefix="/minimal",
        settings=settings,
        closables=[hub],  # the server ends its streams (with `shutdown`) the moment it stops
        route_handlers=[*health_routes(), events, publish],  # health: /healthz, /readyz
        state=State({"hub": hub, "settings": settings}),
        on_startup=[hub.start],
        on_shutdown=[hub.close],
        **app_defaults("/minimal", "minimal", "One topic over SSE, published with POST.", max_body=16 * 1024),
    )
