"""What every handler needs: the app's ``Chat`` object, the current user, the write limit."""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotAuthorizedException

from shared.backends import BackendUnavailable
from shared.hub import Hub
from shared.limits import client_address
from shared.security import COOKIE_PATH

from .db import Database
from .files import Files
from .model import LOBBY, ChatStore
from .names import Names
from .presence import Presence
from .ratelimit import Limits, Rate
from .revocations import Revocations
from .session import COOKIE, Session, SessionSigner, User
from .settings import ChatSettings

__all__ = ["Chat", "CurrentUser", "chat_of", "current_user", "session_cookie", "session_of"]

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Chat:
    """The app's parts. ``start()``/``stop()`` are its startup and shutdown."""

    settings: ChatSettings
    hub: Hub
    store: ChatStore
    files: Files
    presence: Presence
    names: Names
    limits: Limits
    revocations: Revocations
    secret: bytes | None = None  # the cookie signing key if given; else the store's (made once)
    db: Database | None = None  # the SQLite store's database (None with Redis)
    _signer: SessionSigner | None = None
    _sweeper: asyncio.Task[None] | None = None

    @property
    def signer(self) -> SessionSigner:
        if self._signer is None:
            raise RuntimeError("the chat is not started: the app's on_startup loads the session key")
        return self._signer

    async def start(self) -> None:
        await self.store.open()
        await self.hub.start()
        await self.store.init()
        self._signer = SessionSigner(self.secret or await self.store.secret(), self.settings.session_max_age)
        if self.secret is None and hasattr(self.store, "on_secret"):
            # The Redis store replaced a key its Redis lost with another instance's (issue 13.3).
            self.store.on_secret = self._new_secret
        await self.revocations.start()
        await self.presence.start()
        self._sweeper = asyncio.create_task(self._sweep_rooms(), name="chat-room-sweeper")

    async def _sweep_rooms(self) -> None:
        """Delete the user-made rooms that stayed empty and unused for ``empty_room_ttl``."""
        while True:
            try:
                gone = await self.store.expire_rooms(self.settings.empty_room_ttl)
            except Exception as exc:  # the store is away (Redis down, disk full): next time
                log.info("could not expire unused rooms: %r", exc)
            else:
                if gone:
                    log.info("deleted %d rooms that were empty and unused: %s", len(gone), ", ".join(gone))
            await asyncio.sleep(self.settings.room_sweep_interval)

    def _new_secret(self, key: bytes) -> None:
        self._signer = SessionSigner(key, self.settings.session_max_age)

    async def stop(self) -> None:
        # The store closes last: requests still in flight while the streams end can finish.
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.wait({self._sweeper}, timeout=2)
            self._sweeper = None
        await self.presence.close()
        await self.hub.close()
        await self.store.close()

    def address(self, request: Request[Any, Any, Any]) -> str | None:
        """The client address the per-address caps count ``request`` under (``None``: exempt)."""
        return client_address(request.scope, limit_loopback=self.settings.limit_loopback)

    async def spend(self, user: User, request: Request[Any, Any, Any]) -> None:
        """One write by ``user`` from ``request``'s address: 429 with ``Retry-After`` when either
        is over its rate (the person's first, so one person's burst names their own limit)."""
        s = self.settings
        await self.take(Rate("rate", s.rate, s.burst, "writes per person"), user.id)
        rate = Rate("address_rate", s.address_rate, s.address_burst, "writes per client address")
        await self.take(rate, self.address(request))

    async def take(self, rate: Rate, key: str | None) -> None:
        """One token of ``rate`` for ``key`` (``None``: not limited); 429 naming the rule if none is left."""
        if key is None:
            return
        wait = await self.limits.take(rate, key)
        if wait > 0:
            raise ClientException(
                f"too many requests: {rate.what} are limited to {rate.describe()} ({rate.name}); retry in {wait:.2f} s",
                status_code=429,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
                extra={"limit_name": rate.name, "limit": rate.burst},
            )

    async def announce(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        """An ephemeral event: live clients see it, nobody replays it."""
        await self.hub.publish_json(topic, payload, event=event, ephemeral=True)

    async def announce_activity(self, message: dict[str, Any]) -> None:
        """Tell every page's room list that a room has a new message (for unread counts).

        Best effort: the message is stored already, and pages recount when they reconnect."""
        payload = {k: message[k] for k in ("room", "id", "author_id", "author", "mentions")}
        try:
            await self.announce(LOBBY, "activity", payload)
        except BackendUnavailable as exc:
            log.info("activity of message %s not announced: %s", message["id"], exc)


# Handlers declare ``user: CurrentUser``; the app provides it with :func:`current_user`.
CurrentUser = NamedDependency[User]


def chat_of(state: State) -> Chat:
    chat: Chat = state.chat
    return chat


REVOKED = (
    "this session was signed out or replaced by a newer sign-in (a cookie is revoked when its holder "
    'signs out or joins again): join with POST /chat/session {"name": "..."}'
)


async def session_of(request: Request[Any, Any, Any], chat: Chat, *, required: bool = True) -> Session | None:
    """The request's session: ``None`` without a valid cookie, unless ``required`` (then 401).

    A revoked cookie is 401 even when not required: it must not pass for a sign-in."""
    session = chat.signer.loads(request.cookies.get(COOKIE))
    if session is None:
        if required:
            raise NotAuthorizedException('no session: join first with POST /chat/session {"name": "..."}')
        return None
    if await chat.revocations.is_revoked(session.sid):
        raise NotAuthorizedException(REVOKED)
    return session


async def current_user(request: Request[Any, Any, Any], state: State) -> User:
    """The signed-in user (a Litestar dependency): 401 without a session or with a revoked one,
    409 if the name was taken by someone else while this session was away (after a restart, say)."""
    chat = chat_of(state)
    session = await session_of(request, chat)
    assert session is not None
    user = session.user
    if not await chat.names.claim(user):
        raise ClientException(
            f"the name {user.name!r} is now used by someone else online: pick another with POST /chat/session",
            status_code=409,
        )
    return user


def session_cookie(chat: Chat, session: Session) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=chat.signer.dumps(session),
        path=COOKIE_PATH,
        max_age=chat.settings.session_max_age,
        httponly=True,  # page scripts never see it: an XSS could not steal the session
        samesite="lax",
        secure=chat.settings.secure_cookie,
    )
