"""``create_app()``: the chat under ``/chat/``, on SQLite (one process) or Redis (many)."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from litestar import Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import ServiceUnavailableException

from shared.apps import App, app_defaults
from shared.backends.redis import RedisBackend
from shared.errors import Unprocessable, error_response, storage_trouble
from shared.health import health_routes
from shared.hub import Hub, HubSettings
from shared.pages import page_route, static_router

from . import routes_files, routes_messages, routes_rooms, routes_session, routes_streams
from .backend import SqliteBackend
from .context import Chat, current_user
from .model import room_topic
from .presence import Presence
from .redis_conn import UNAVAILABLE
from .rules import RuleError
from .settings import ChatSettings
from .wiring import is_redis, redis_parts, sqlite_parts

__all__ = ["create_app"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# JSON bodies are small (4,000 characters of text at most); uploads set their own limit.
MAX_JSON_BODY = 64 * 1024


page = page_route("/chat", STATIC / "chat.html", "chat page")


def _rule_error(request: Request[Any, Any, Any], exc: RuleError) -> Response[dict[str, Any]]:
    # Input that breaks a documented rule: 422, with the rule in the message.
    return error_response(request, Unprocessable(str(exc)))


def _database_error(request: Request[Any, Any, Any], exc: sqlite3.OperationalError) -> Response[dict[str, Any]]:
    # Locked past the busy timeout, disk full, file gone: nothing was written (the transaction
    # rolled back), so a 503 tells clients to retry; the page's sends do, with the same ids.
    if storage_trouble(exc) is not None:
        return error_response(request, exc)  # "the server's disk is full...", Retry-After
    log.error("chat database error: %s", exc)
    detail = "the chat database is unavailable right now; retry shortly"
    return error_response(request, ServiceUnavailableException(detail, headers={"Retry-After": "1"}))


class _RedisErrors:
    """The exception handler for "Redis is unavailable": 503 + Retry-After, logged once in a while.

    Each change is one script, so it happened entirely or not at all; a retry with the same ids
    is safe (a send that did land is found, not doubled)."""

    LOG_EVERY = 10.0

    def __init__(self) -> None:
        self._logged = -self.LOG_EVERY
        self._since = 0

    def __call__(self, request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
        self._since += 1
        now = time.monotonic()
        if now - self._logged >= self.LOG_EVERY:  # an outage at 1,000 requests a second: one line
            log.warning(
                "chat: Redis unavailable (%d requests answered 503 since the last report): %s", self._since, exc
            )
            self._logged, self._since = now, 0
        detail = "the chat's Redis is unavailable right now; retry shortly"
        return error_response(request, ServiceUnavailableException(detail, headers={"Retry-After": "1"}))


def create_app(
    data_dir: Path,
    settings: ChatSettings | None = None,
    *,
    backend: str | SqliteBackend | None = None,
    hub_settings: HubSettings | None = None,
    secret: bytes | None = None,
    **options: Any,
) -> App:
    """The chat app (the shape every app has: ``docs/app-contract.md``).

    ``backend`` picks the store: ``None`` or ``memory://`` is SQLite in ``data_dir`` (a
    :class:`SqliteBackend` on ``<data_dir>/chat.sqlite3``, or the one given), for one process;
    ``redis://host:port/db`` keeps everything in Redis, so several instances serve one chat
    (``data_dir`` is then unused). ``options`` are fields of ``settings`` to change
    (``max_text=100``). ``secret`` (the cookie signing key) defaults to one made once and kept
    by the store: ``<data_dir>/chat-secret.key``, or a Redis key.
    """
    settings = dataclasses.replace(settings or ChatSettings(), **options)
    hub_settings = hub_settings or HubSettings()
    if isinstance(backend, str) and is_redis(backend):
        parts = redis_parts(backend, settings)
        assert isinstance(parts.backend, RedisBackend)
        # A returning client replays from the stream in one go: never fewer than are kept.
        kept = parts.backend.maxlen + parts.backend.trim_slack
        hub_settings = dataclasses.replace(hub_settings, replay_limit=max(hub_settings.replay_limit, kept))
    else:
        parts = sqlite_parts(data_dir, settings, backend if isinstance(backend, SqliteBackend) else None)
    hub = Hub(parts.backend, hub_settings)

    async def announce(room: str, event: str, payload: dict[str, Any]) -> None:
        await hub.publish_json(room_topic(room), payload, event=event, ephemeral=True)

    chat = Chat(
        settings=settings,
        hub=hub,
        store=parts.store,
        files=parts.files,
        presence=Presence(
            parts.roster,
            parts.names,
            announce,
            grace=settings.presence_grace,
            cap=settings.max_room_members,
            client_cap=settings.max_room_members_per_address,
            heartbeat=settings.presence_ttl / 3,
            stopping=lambda: hub.closing,
        ),
        names=parts.names,
        limits=parts.limits,
        revocations=parts.revocations,
        secret=secret,
        db=parts.db,
    )
    handlers: dict[Any, Any] = {RuleError: _rule_error, sqlite3.OperationalError: _database_error}
    handlers.update(dict.fromkeys(UNAVAILABLE, _RedisErrors()))
    return App(
        prefix="/chat",
        settings=settings,
        closables=[hub],  # its streams end with `shutdown`; chat.stop (on_shutdown) closes the rest
        route_handlers=[
            *health_routes(),
            page,
            *routes_session.handlers,
            *routes_rooms.handlers,
            *routes_messages.handlers,
            *routes_files.handlers,
            *routes_streams.handlers,
            static_router("/chat", STATIC, name="chat-static"),
        ],
        dependencies={"user": Provide(current_user)},
        state=State({"chat": chat}),
        on_startup=[chat.start],
        on_shutdown=[chat.stop],
        **app_defaults(
            "/chat",
            "chat",
            "Rooms, history, presence, typing, reactions and files over SSE + POST.",
            max_body=MAX_JSON_BODY,
            exception_handlers=handlers,
        ),
    )
