"""``create_app()``: the chat under ``/chat/``, its state in ``<data-dir>/chat.sqlite3``."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.response import File

from shared.apps import app_defaults
from shared.hub import Hub, HubSettings
from shared.openapi import FileOperation
from shared.pages import static_router

from . import routes_files, routes_messages, routes_rooms, routes_session, routes_streams
from .backend import SqliteBackend
from .context import Chat, current_user
from .db import Database
from .files import FileStore
from .presence import Presence
from .ratelimit import RateLimiter, Throttle
from .rules import RuleError
from .session import SessionSigner, load_or_create_key
from .settings import ChatSettings
from .store import ChatStore, room_topic

__all__ = ["create_app"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# JSON bodies are small (4,000 characters of text at most); uploads set their own limit.
MAX_JSON_BODY = 64 * 1024


@get("/chat/", media_type="text/html", operation_class=FileOperation)
async def page() -> File:
    """The chat page (HTML; its scripts and styles are under ``/chat/static/``)."""
    return File(STATIC / "chat.html", content_disposition_type="inline", media_type="text/html")


def _rule_error(_: Request[Any, Any, Any], exc: RuleError) -> Response[dict[str, Any]]:
    # Input that breaks a documented rule: 422, with the rule in the message.
    return Response({"status_code": 422, "detail": str(exc)}, status_code=422)


def _database_error(_: Request[Any, Any, Any], exc: sqlite3.OperationalError) -> Response[dict[str, Any]]:
    # Locked past the busy timeout, disk full, file gone: nothing was written (the transaction
    # rolled back), so a 503 tells clients to retry; the page's sends do, with the same ids.
    log.error("chat database error: %s", exc)
    detail = "the chat database is unavailable right now; retry shortly"
    return Response({"status_code": 503, "detail": detail}, status_code=503, headers={"Retry-After": "1"})


def create_app(
    data_dir: Path,
    *,
    settings: ChatSettings | None = None,
    hub_settings: HubSettings | None = None,
    backend: SqliteBackend | None = None,
    secret: bytes | None = None,
) -> Litestar:
    """The chat app. ``backend`` defaults to a :class:`SqliteBackend` on
    ``<data_dir>/chat.sqlite3``; ``secret`` (the cookie signing key) to one generated once and
    kept in ``<data_dir>/chat-secret.key``, so sessions survive restarts."""
    settings = settings or ChatSettings()
    backend = backend or SqliteBackend(Database(data_dir / "chat.sqlite3"))
    db = backend.db
    hub = Hub(backend, hub_settings)

    async def announce(room: str, event: str, payload: dict[str, Any]) -> None:
        await hub.publish_json(room_topic(room), payload, event=event, ephemeral=True)

    chat = Chat(
        settings=settings,
        db=db,
        backend=backend,
        hub=hub,
        store=ChatStore(db, backend, settings),
        files=FileStore(data_dir / "chat-files", settings.max_file_bytes),
        presence=Presence(announce, grace=settings.presence_grace, name_ttl=settings.name_ttl),
        signer=SessionSigner(secret or load_or_create_key(data_dir / "chat-secret.key"), settings.session_max_age),
        limiter=RateLimiter(settings.rate, settings.burst),
        typing=Throttle(settings.typing_interval),
    )
    return Litestar(
        route_handlers=[
            page,
            *routes_session.handlers,
            *routes_rooms.handlers,
            *routes_messages.handlers,
            *routes_files.handlers,
            *routes_streams.handlers,
            static_router("/chat", STATIC, name="chat-static"),
        ],
        dependencies={"user": Provide(current_user)},
        state=State({"chat": chat, "sse_hubs": [hub]}),
        on_startup=[db.open, hub.start, chat.store.init],
        on_shutdown=[chat.presence.close, hub.close, db.close],
        **app_defaults(
            "/chat",
            "chat",
            "Rooms, history, presence, typing, reactions and files over SSE + POST.",
            max_body=MAX_JSON_BODY,
            exception_handlers={RuleError: _rule_error, sqlite3.OperationalError: _database_error},
        ),
    )
