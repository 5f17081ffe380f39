"""Client sessions of the correlator (``shared.correlation``): who is connected, with what token,
capped per client address and in all, kept for a grace period after their stream drops.

A session counts from the moment it is made until its grace period ends, connected or not. A
client at its own cap (``max_sessions_per_client``) replaces its oldest session that is away; with
all of them connected it gets 429. When the instance holds ``max_sessions``, a client that holds
fewer than the biggest holder replaces that holder's oldest session (away ones first), so a
flood from one address never locks out an address that holds nothing (issue 14.4).

No web framework here: refusals are :mod:`shared.problems` errors, mapped to HTTP by ``shared.errors``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .hub import Hub, Subscription
from .problems import Forbidden, InUse, Invalid, TooMany, Unavailable
from .security import tokens_equal

if TYPE_CHECKING:
    from .rpc_pending import _Pending

__all__ = ["ClientGone", "Session", "SessionTable", "UnknownClient"]

_CLIENT_ID_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class ClientGone(LookupError):
    """The client was away longer than the grace period (or the server is shutting down)."""


class UnknownClient(LookupError):
    """No session with that client id: it never connected, or it is gone."""


@dataclass(eq=False)
class Session:
    client_id: str
    token: str
    stream: Subscription | None = None
    away_since: float | None = field(default_factory=time.monotonic)
    pending: dict[str, _Pending] = field(default_factory=dict)
    expiry: asyncio.TimerHandle | None = None
    # Requests of this client that wait on another instance (the session moved here after they
    # were sent): id -> message, re-sent on each (re)connect until their deadline.
    inherited: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The instance the session moved to; its stream is there now, on the same topic.
    moved_to: str | None = None
    # What the app noted about the request that opened the current stream (e.g. who was logged
    # in); set on every open, so a takeover carries the new opener's, never the old one's.
    meta: dict[str, Any] = field(default_factory=dict)
    # The client address that made the session ("" for none / loopback): whose cap it counts in.
    client: str = ""

    @property
    def topic(self) -> str:
        return f"rpc:{self.client_id}"


class SessionTable:
    """The sessions of one instance. ``start()``/``close()`` with the app's lifespan."""

    def __init__(
        self,
        hub: Hub,
        *,
        grace: float,
        max_sessions: int,
        max_sessions_per_client: int | None,
        limit_loopback: bool,
    ) -> None:
        self.hub = hub
        self.grace = grace
        self.max_sessions = max_sessions
        self.max_sessions_per_client = max_sessions_per_client
        self.limit_loopback = limit_loopback
        self._sessions: dict[str, Session] = {}
        # Client address -> its sessions, oldest first ("": no address, or loopback).
        self._by_client: dict[str, dict[str, Session]] = {}
        self._closed = False

    @property
    def instance(self) -> str | None:
        """This instance's id when there are several (see ``Forwarding``), else ``None``."""
        return None

    def sessions(self) -> list[dict[str, Any]]:
        """Connected and briefly-away clients of this instance, for pages that list them."""
        now = time.monotonic()
        return [
            {
                "client_id": s.client_id,
                "connected": s.stream is not None,
                "away_s": None if s.away_since is None else round(now - s.away_since, 1),
                "pending": len(s.pending),
                "instance": self.instance,
            }
            for s in self._sessions.values()
        ]

    def has_session(self, client_id: str) -> bool:
        """Whether ``client_id`` is connected or briefly away *on this instance*."""
        return client_id in self._sessions

    async def find(self, client_id: str) -> dict[str, Any] | None:
        """The ``meta`` of ``client_id``'s session, or ``None`` if no instance holds it."""
        session = self._sessions.get(client_id)
        return None if session is None else dict(session.meta)

    def open_session(self, client_id: str | None, token: str | None, client: str | None = None) -> Session:
        """Claim ``client_id`` on this instance (new, or taken over with its token); ``None``
        picks a fresh id. ``client`` is the address whose caps a new session counts in (see the
        module's docstring). See :meth:`claim_session` for the check across instances."""
        if self._closed:
            raise Unavailable("server is shutting down")
        _check_client_id(client_id)
        cid = client_id or uuid.uuid4().hex[:12]
        session = self._sessions.get(cid)
        if session is None:
            return self._new_session(cid, secrets.token_urlsafe(24), client)
        if token is None:
            raise InUse(f"client id {cid!r} is in use; reconnect with its session token, or pick another id")
        if not tokens_equal(token, session.token):
            raise Forbidden("wrong session token for this client id")
        return session

    def _new_session(self, cid: str, token: str, client: str | None = None) -> Session:
        key = client or ""
        mine = self._by_client.get(key, {})
        cap = self.max_sessions_per_client
        if key and cap is not None and len(mine) >= cap:
            # Each session is kept for the grace period, connected or not: a client that opens
            # and drops sessions in a loop pays with its own oldest away one, nobody else's.
            oldest = next((s for s in mine.values() if s.stream is None), None)
            if oldest is None:
                raise TooMany(
                    f"too many client sessions from {key} (the limit is {cap} per client address, "
                    "all connected); close one before opening another",
                    headers={"Retry-After": str(max(1, int(self.grace)))},
                    extra={"limit": cap, "limit_name": "max_sessions_per_client"},
                )
            self._evict(oldest, "it was replaced by newer sessions of the same client address")
        if len(self._sessions) >= self.max_sessions and not self._make_room(key):
            # A cap on them all keeps a flood from many addresses from eating memory.
            raise TooMany(
                f"too many client sessions ({self.max_sessions}); retry later",
                headers={"Retry-After": str(max(1, int(self.grace)))},
                extra={"limit": self.max_sessions, "limit_name": "max_sessions"},
            )
        session = self._sessions[cid] = Session(cid, token, client=key)
        self._by_client.setdefault(key, {})[cid] = session
        self._schedule_expiry(session)  # forgotten unless its stream opens within the grace period
        return session

    def _make_room(self, key: str) -> bool:
        """All sessions are taken: free one of the biggest holder's, if it holds more than ``key``.

        Its oldest away session goes first, else its oldest connected one (its stream ends)."""
        held = len(self._by_client.get(key, {}))
        biggest = max(self._by_client, key=lambda k: len(self._by_client[k]), default=None)
        if biggest is None or len(self._by_client[biggest]) <= held:
            return False
        theirs = self._by_client[biggest]
        victim = next((s for s in theirs.values() if s.stream is None), None) or next(iter(theirs.values()))
        self._evict(victim, "the server was full and its client address held the most sessions")
        return True

    def _evict(self, session: Session, why: str) -> None:
        """End a session before its time: its stream closes, its waiters get ClientGone."""
        self._remove(session)
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None
        old, session.stream = session.stream, None
        if old is not None:
            old.close("evicted")
        for p in list(session.pending.values()):
            if not p.future.done():
                p.future.set_exception(ClientGone(f"client {session.client_id!r} lost its session: {why}"))

    def _remove(self, session: Session) -> None:
        if self._sessions.get(session.client_id) is session:
            del self._sessions[session.client_id]
        mine = self._by_client.get(session.client)
        if mine is not None and mine.get(session.client_id) is session:
            del mine[session.client_id]
            if not mine:
                del self._by_client[session.client]  # an address that left costs nothing

    async def claim_session(self, client_id: str | None, token: str | None, client: str | None = None) -> Session:
        """:meth:`open_session`; with several instances, checked against the others too."""
        return self.open_session(client_id, token, client)

    def _stream_ended(self, session: Session) -> None:
        session.stream = None
        session.away_since = time.monotonic()
        self._schedule_expiry(session)

    def _schedule_expiry(self, session: Session) -> None:
        if session.expiry is not None:
            session.expiry.cancel()
        session.expiry = asyncio.get_running_loop().call_later(self.grace, self._expire, session)

    def _expire(self, session: Session) -> None:
        session.expiry = None
        if session.stream is not None or self._sessions.get(session.client_id) is not session:
            return
        self._remove(session)
        for p in list(session.pending.values()):
            if not p.future.done():
                p.future.set_exception(ClientGone(f"client {session.client_id!r} disconnected and did not come back"))

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        """Forget all sessions (their waiters were failed first, by the request table)."""
        self._closed = True
        for session in self._sessions.values():
            if session.expiry is not None:
                session.expiry.cancel()
        self._sessions.clear()
        self._by_client.clear()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran: the server is shutting down."""
        return self._closed


def _check_client_id(client_id: str | None) -> None:
    if client_id is not None and (not 1 <= len(client_id) <= 64 or not set(client_id) <= _CLIENT_ID_OK):
        raise Invalid("client_id must be 1-64 characters of letters, digits, '-', '_' or '.'")
