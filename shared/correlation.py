"""Server-to-client requests over SSE, answered by POST and matched by id.

Each client holds a *session*: a client id, a secret token, and one live SSE stream. The server
sends JSON-RPC requests down that stream (``event: request``); the client POSTs the response with
``Authorization: Bearer <token>``; the answer wakes the waiter whose request has that id, never
"the oldest waiter" (the seed's mistake). Every waiter is a one-shot future removed in
``finally``: a late answer is refused with 409, never leaked.

Delivery is at-least-once with dedupe by id: a stream (re)opening first gets every request still
pending for its client, then live ones, so a request sent while the client was briefly away is
delivered when it comes back. A client away longer than the grace period is gone: its pending
requests fail at once with :class:`ClientGone`.

On several instances (workers or hosts on one Redis), give the correlator a
:class:`~shared.routing.Router`. A session lives on the instance its stream opened on (its
*holder*); a request for a client held elsewhere is forwarded to the holder, which sends it and
waits for the answer as for any local client, and sends the outcome back. Request ids start with
the id of the instance that waits (``<instance>.<hex>``), so an answer POSTed to any instance is
routed there, with the same 400/403/404/409 outcomes. A client id held by one instance is
refused on another without its token (409); with it, the session moves (token and pending
requests), and the requests already sent are still answered where they wait.

Sessions are capped per client address before they are capped in all (issue 14.4): a session
counts from the moment it is made until its grace period ends, connected or not. A client at
its own cap (``max_sessions_per_client``) replaces its oldest session that is away; with all
of them connected it gets 429. When the instance holds ``max_sessions``, a client that holds
fewer than the biggest holder replaces that holder's oldest session (away ones first), so a
flood from one address never locks out an address that holds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from litestar import Request
from litestar.exceptions import ValidationException
from litestar.response import Stream

from . import jsonrpc
from .encoding import encode, encode_json
from .hub import Hub, Subscription
from .limits import client_address
from .metrics import PendingTable, count, track_pending
from .problems import Forbidden, InUse, Invalid, NotFound, Problem, TooMany, Unavailable
from .responses import sse_response
from .security import tokens_equal

if TYPE_CHECKING:
    from .routing import Router

__all__ = [
    "AnswerRejected",
    "ClientGone",
    "Correlator",
    "RequestCancelled",
    "RequestTimeout",
    "Session",
    "UnknownClient",
]

log = logging.getLogger(__name__)

_HEX = set("0123456789abcdef")
_CLIENT_ID_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
# A forwarded request waits this much longer than its own timeout for the holder's verdict, so
# the holder's "timed out" (with its cancel to the client) arrives before the caller gives up.
_FORWARD_MARGIN = 3.0
# How long a lookup of the instance holding a client may take before it counts as "nobody".
_LOOKUP_TIMEOUT = 2.0


class RequestTimeout(TimeoutError):
    """No answer before the deadline; the client was sent ``event: cancel`` for the request."""


class RequestCancelled(asyncio.CancelledError):
    """The server side cancelled the request (``Correlator.cancel``)."""


class ClientGone(LookupError):
    """The client was away longer than the grace period (or the server is shutting down)."""


class UnknownClient(LookupError):
    """No session with that client id: it never connected, or it is gone."""


class AnswerRejected(Problem):
    """A POSTed answer that reaches no waiter: 400 invalid, 403 wrong token, 404 unknown id,
    409 already answered / timed out / cancelled. The detail says which."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail, status_code=status_code)


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


@dataclass(eq=False)
class _Pending:
    id: str
    session: Session
    message: dict[str, Any]
    deadline: float  # time.time(), sent to the client
    future: asyncio.Future[Any]


Outcome = Literal["answered", "timed out", "cancelled", "client gone"]


class Correlator:
    """Sessions and pending requests of one app. ``start()``/``close()`` with the app's lifespan.

    ``router`` (optional) connects the instances of the app: see the module's docstring. It is
    started and closed by its owner: start it after :meth:`start`, close it after :meth:`close`.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        grace: float = 30.0,
        default_timeout: float = 30.0,
        max_timeout: float = 600.0,
        max_pending_per_client: int = 100,
        max_sessions: int = 10_000,
        max_sessions_per_client: int | None = 32,
        limit_loopback: bool = False,
        remember: int = 10_000,
        router: Router | None = None,
    ) -> None:
        self.hub = hub
        self.grace = grace
        self.default_timeout = default_timeout
        self.max_timeout = max_timeout
        self.max_pending_per_client = max_pending_per_client
        self.max_sessions = max_sessions
        self.max_sessions_per_client = max_sessions_per_client
        self.limit_loopback = limit_loopback
        self._sessions: dict[str, Session] = {}
        # Client address -> its sessions, oldest first ("": no address, or loopback).
        self._by_client: dict[str, dict[str, Session]] = {}
        self._pending: dict[str, _Pending] = PendingTable()
        track_pending(self._pending)
        # Finished request ids -> (session, outcome), so a late or second answer gets 409, not 404.
        self._finished: OrderedDict[str, tuple[Session, Outcome]] = OrderedDict()
        self._remember = remember
        self._closed = False
        self.router = router
        self._id_prefix = ""
        self._where: dict[str, str] = {}  # client id -> the instance last seen holding it
        self._serving = 0  # requests forwarded here by other instances, still waiting
        self._background: set[asyncio.Future[bool]] = set()
        if router is not None:
            self._id_prefix = router.instance + "."
            for method, fn in {
                "rpc.request": self._serve_request,
                "rpc.answer": self._serve_answer,
                "rpc.cancel": self._serve_cancel,
                "rpc.notify": self._serve_notify,
                "rpc.holds": self._serve_holds,
                "rpc.find": self._serve_find,
                "rpc.claim": self._serve_claim,
                "rpc.sessions": self._serve_sessions,
            }.items():
                router.handle(method, fn)

    @property
    def instance(self) -> str | None:
        """This instance's id when there is a router, else ``None``."""
        return None if self.router is None else self.router.instance

    # -- sessions -----------------------------------------------------------------------------

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

    async def all_sessions(self) -> list[dict[str, Any]]:
        """:meth:`sessions` of every instance (``instance`` says which holds each client).
        An instance that does not answer in time is left out."""
        if self.router is None:
            return self.sessions()
        everyone = await self.router.call_all("rpc.sessions", timeout=_LOOKUP_TIMEOUT)
        found: list[dict[str, Any]] = []
        for name, listed in everyone.items():
            if isinstance(listed, BaseException):
                log.warning("instance %s did not list its clients: %s", name, listed)
            else:
                found.extend(listed)
        return found

    def has_session(self, client_id: str) -> bool:
        """Whether ``client_id`` is connected or briefly away *on this instance*."""
        return client_id in self._sessions

    async def find(self, client_id: str) -> dict[str, Any] | None:
        """The ``meta`` of ``client_id``'s session wherever it is held (this instance first), or
        ``None`` if no instance holds it. An instance that does not answer in time counts as not."""
        session = self._sessions.get(client_id)
        if session is not None:
            return dict(session.meta)
        if self.router is None:
            return None
        found = await self.router.call_all("rpc.find", client_id, timeout=_LOOKUP_TIMEOUT)
        for name, meta in found.items():
            if isinstance(meta, dict) and name != self.router.instance:
                self._where[client_id] = name
                return meta
        return None

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
        """:meth:`open_session`, checked against the other instances: an id held elsewhere is
        refused without its token (409), refused with a wrong one (403), and moved here with
        the right one."""
        if self.router is None or client_id is None or client_id in self._sessions:
            return self.open_session(client_id, token, client)
        if self._closed:
            raise Unavailable("server is shutting down")
        _check_client_id(client_id)
        holder = await self._holder(client_id)
        if holder is not None:
            if token is None:
                raise InUse(
                    f"client id {client_id!r} is in use (on instance {holder!r}); reconnect with "
                    "its session token, or pick another id"
                )
            try:
                moved = await self.router.call(
                    holder, "rpc.claim", {"client_id": client_id, "token": token, "to": self.router.instance}
                )
            except Problem as exc:
                if exc.status_code != 404:  # 404: it went away meanwhile, so the id is free
                    raise
            else:
                if client_id not in self._sessions:  # (unless it reconnected here meanwhile)
                    session = self._new_session(client_id, str(moved["token"]), client)
                    session.inherited = {str(m["id"]): m for m in moved["pending"]}
                return self.open_session(client_id, token, client)
        return self.open_session(client_id, token, client)

    def stream(
        self, request: Request[Any, Any, Any], client_id: str | None = None, *, meta: dict[str, Any] | None = None
    ) -> Stream:
        """The SSE response of a client's session: ``session``, pending requests, then live ones.

        The token for a takeover comes from ``Authorization: Bearer`` or, for a browser
        ``EventSource`` that cannot set headers, the ``token`` query parameter. On several
        instances use :meth:`open_stream`. ``meta`` is kept on the session (see :meth:`find`).
        """
        cid = client_id if client_id is not None else request.query_params.get("client_id")
        return self._stream(self.open_session(cid or None, _token(request), self._client(request)), meta)

    async def open_stream(
        self, request: Request[Any, Any, Any], client_id: str | None = None, *, meta: dict[str, Any] | None = None
    ) -> Stream:
        """:meth:`stream`, with the client id checked against every instance (:meth:`claim_session`)."""
        cid = client_id if client_id is not None else request.query_params.get("client_id")
        return self._stream(await self.claim_session(cid or None, _token(request), self._client(request)), meta)

    def _client(self, request: Request[Any, Any, Any]) -> str | None:
        return client_address(request.scope, limit_loopback=self.limit_loopback)

    def _stream(self, session: Session, meta: dict[str, Any] | None = None) -> Stream:
        def opened(sub: Subscription) -> None:
            old = session.stream
            if old is not None:
                old.close("replaced")  # a takeover: the old stream ends, cleanly
            session.stream = sub
            session.meta = dict(meta or {})
            session.away_since = None
            if session.expiry is not None:
                session.expiry.cancel()
                session.expiry = None

        async def prelude() -> bytes:
            hello = encode_json({"client_id": session.client_id, "token": session.token}, event="session")
            # Requests that are still pending (sent while away, or unanswered before a drop).
            queued = [encode_json(p.message, event="request") for p in session.pending.values()]
            if session.inherited:
                now = time.time()
                for rid, message in list(session.inherited.items()):
                    if message.get("deadline", 0) > now:
                        queued.append(encode_json(message, event="request"))
                    else:
                        del session.inherited[rid]
            return hello + b"".join(queued)

        def farewell(sub: Subscription) -> bytes | None:
            if sub.ended_reason == "replaced":
                return encode(json.dumps({"reason": "another connection took over this client id"}), event="replaced")
            return None

        mine: list[Subscription] = []

        def on_open(sub: Subscription) -> None:
            mine.append(sub)
            opened(sub)

        async def on_close() -> None:
            # Only the stream that currently holds the session marks it away; a replaced one doesn't.
            if mine and session.stream is mine[0]:
                self._stream_ended(session)

        return sse_response(
            self.hub, session.topic, prelude=prelude, on_open=on_open, farewell=farewell, on_close=on_close
        )

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

    # -- requests -----------------------------------------------------------------------------

    async def request(self, client_id: str, method: str, params: Any = None, *, timeout: float | None = None) -> Any:
        """Send a request to a client and wait for its answer; returns the ``result``.

        Raises :class:`RequestTimeout`, :class:`ClientGone`, :class:`UnknownClient`,
        :class:`RequestCancelled`, or :class:`jsonrpc.RemoteError` when the client answered an error.
        For a client held by another instance, also :class:`~shared.problems.Problem` 503 (that
        instance is unreachable or stopping) or 504 (it did not answer in time).
        """
        session = self._sessions.get(client_id)
        timeout = self.default_timeout if timeout is None else min(timeout, self.max_timeout)
        if session is None:
            if self.router is None:
                raise UnknownClient(f"no client with id {client_id!r} is connected")
            return await self._forward(client_id, method, params, timeout)
        return await self._request(session, method, params, timeout, self._id_prefix + uuid.uuid4().hex)

    async def _request(self, session: Session, method: str, params: Any, timeout: float, rid: str) -> Any:
        client_id = session.client_id
        if len(session.pending) >= self.max_pending_per_client:
            raise TooMany(
                f"client {client_id!r} already has {len(session.pending)} pending requests",
                headers={"Retry-After": "1"},
            )
        # The id is unique across clients, restarts and instances, and names the instance that waits.
        message = jsonrpc.request(rid, method, params)
        message["deadline"] = round(time.time() + timeout, 3)
        pending = _Pending(rid, session, message, message["deadline"], asyncio.get_running_loop().create_future())
        self._pending[rid] = pending
        session.pending[rid] = pending
        outcome: Outcome = "client gone"
        try:
            if session.stream is not None or session.moved_to is not None:
                await self.hub.publish_json(session.topic, message, event="request", ephemeral=True)
            # (If the client is away, the request waits in session.pending for its next stream.)
            try:
                result = await asyncio.wait_for(asyncio.shield(pending.future), timeout)
            except TimeoutError:
                outcome = "timed out"
                # Closed before the await below, so an answer arriving meanwhile gets 409, not
                # "delivered" to a waiter that has already given up.
                self._forget(pending, outcome)
                await self._send_cancel(session, rid, "timeout")
                raise RequestTimeout(f"client {client_id!r} did not answer {method!r} within {timeout:g}s") from None
            except RequestCancelled:
                outcome = "cancelled"
                raise
            except asyncio.CancelledError:
                outcome = "cancelled"
                self._forget(pending, outcome)
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._send_cancel(session, rid, "cancelled"))
                raise
            except ClientGone:
                outcome = "client gone"
                raise
            outcome = "answered"
            return result
        except jsonrpc.RemoteError:
            outcome = "answered"
            raise
        finally:
            self._forget(pending, outcome)

    def _forget(self, pending: _Pending, outcome: Outcome) -> None:
        """Close a request: out of the pending tables, into the bounded memory of finished ones."""
        if self._pending.pop(pending.id, None) is None:
            return  # already closed
        pending.session.pending.pop(pending.id, None)
        self._finished[pending.id] = (pending.session, outcome)
        count("sse_requests", "outcome", outcome)
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)

    async def notify(self, client_id: str, method: str, params: Any = None) -> None:
        """A request that needs no answer (no id). Dropped if the client is not connected."""
        session = self._sessions.get(client_id)
        if session is None:
            if self.router is None:
                raise UnknownClient(f"no client with id {client_id!r} is connected")
            await self._on_holder(client_id, "rpc.notify", {"client_id": client_id, "method": method, "params": params})
            return
        await self.hub.publish_json(
            session.topic, jsonrpc.notification(method, params), event="notification", ephemeral=True
        )

    async def cancel(self, request_id: str, reason: str = "cancelled by the server") -> bool:
        """Cancel a pending request: its waiter gets :class:`RequestCancelled`, the client a ``cancel``."""
        pending = self._pending.get(request_id)
        if pending is None:
            owner = self._owner(request_id)
            if owner is None or self.router is None:
                return False
            try:
                return bool(await self.router.call(owner, "rpc.cancel", {"id": request_id, "reason": reason}))
            except Problem:
                return False  # that instance is gone, and its requests with it
        if pending.future.done():
            return False
        pending.future.set_exception(RequestCancelled(reason))
        self._forget(pending, "cancelled")  # an answer racing the cancel gets 409
        await self._send_cancel(pending.session, request_id, reason)
        return True

    async def _send_cancel(self, session: Session, rid: str, reason: str) -> None:
        if session.stream is not None or session.moved_to is not None:
            await self.hub.publish_json(session.topic, {"id": rid, "reason": reason}, event="cancel", ephemeral=True)

    # -- answers ------------------------------------------------------------------------------

    def answer(self, token: str | None, body: Any) -> str:
        """Deliver a POSTed JSON-RPC response to its waiter on this instance; returns the
        request id. Raises :class:`AnswerRejected` (400/403/404/409) when it reaches no waiter."""
        try:
            ans = jsonrpc.parse_answer(body)
        except jsonrpc.InvalidMessage as exc:
            raise AnswerRejected(400, str(exc)) from None
        return self._deliver(token, ans)

    def _deliver(self, token: str | None, ans: jsonrpc.Answer) -> str:
        pending = self._pending.get(ans.id)
        if pending is not None:
            session = pending.session
        elif ans.id in self._finished:
            session = self._finished[ans.id][0]
        else:
            raise AnswerRejected(404, f"no request with id {ans.id!r} (never sent, or forgotten long ago)")
        if not tokens_equal(token, session.token):
            # Checked before anything else is revealed about the request.
            raise AnswerRejected(403, "this token cannot answer that request: it was sent to another client")
        if pending is None or pending.future.done():
            outcome = self._finished[ans.id][1] if ans.id in self._finished else "answered"
            raise AnswerRejected(409, f"request {ans.id!r} is already closed ({outcome}); this answer was dropped")
        if ans.error is not None:
            pending.future.set_exception(ans.error)
        else:
            pending.future.set_result(ans.result)
        return ans.id

    async def answer_request(self, request: Request[Any, Any, Any]) -> str:
        """:meth:`answer` for a POST handler: the body as JSON, the token from ``Authorization``.
        With a router, an answer for a request that waits on another instance is routed there."""
        try:
            body = await request.json()
        except ValidationException as exc:
            raise ValidationException(f"the body must be a JSON-RPC 2.0 response object; {exc.detail}") from None
        if self.router is None:
            return self.answer(bearer_token(request), body)
        try:
            ans = jsonrpc.parse_answer(body)
        except jsonrpc.InvalidMessage as exc:
            raise AnswerRejected(400, str(exc)) from None
        owner = self._owner(ans.id)
        if owner is None:
            return self._deliver(bearer_token(request), ans)
        if owner not in self.router.peers():
            # Its waiters went with it: as unknown as an id never sent.
            raise AnswerRejected(404, f"no request with id {ans.id!r} (the instance that sent it is gone)")
        await self.router.call(owner, "rpc.answer", {"token": bearer_token(request), "body": body})
        return ans.id

    # -- several instances ----------------------------------------------------------------------

    def _owner(self, request_id: str) -> str | None:
        """The other instance a request id names as its waiter's, if any."""
        if self.router is None:
            return None
        owner, dot, _ = request_id.rpartition(".")
        return owner if dot and owner != self.router.instance else None

    async def _holder(self, client_id: str) -> str | None:
        """The other instance holding ``client_id``'s session, if any."""
        assert self.router is not None
        holds = await self.router.call_all("rpc.holds", client_id, timeout=_LOOKUP_TIMEOUT)
        for name, held in holds.items():
            if held is True and name != self.router.instance:
                self._where[client_id] = name
                return name
        self._where.pop(client_id, None)
        return None

    async def _on_holder(self, client_id: str, method: str, params: Any, *, timeout: float | None = None) -> Any:
        """Call ``method`` on the instance holding ``client_id``; :class:`UnknownClient` if none.
        The last holder seen is tried first; if the client left it, everyone is asked again."""
        assert self.router is not None
        unknown = UnknownClient(f"no client with id {client_id!r} is connected")
        for attempt in range(2):
            holder = self._where.get(client_id) if attempt == 0 else None
            if holder is None or holder not in self.router.peers():
                holder = await self._holder(client_id)
                if holder is None:
                    raise unknown
            try:
                return await self.router.call(holder, method, params, timeout=timeout)
            except Problem as exc:
                # 404 from the holder: the client left it (moved, or gone) since we looked.
                if exc.status_code != 404 or attempt == 1:
                    raise
                self._where.pop(client_id, None)
        raise unknown

    async def _forward(self, client_id: str, method: str, params: Any, timeout: float) -> Any:
        assert self.router is not None
        # The holder names the request ``<holder>.<ref>``, so a caller that gives up can cancel it.
        ref = uuid.uuid4().hex
        call = {"client_id": client_id, "method": method, "params": params, "timeout": timeout, "ref": ref}
        try:
            verdict = await self._on_holder(client_id, "rpc.request", call, timeout=timeout + _FORWARD_MARGIN)
        except Problem as exc:
            if exc.status_code == 404:
                raise UnknownClient(str(exc.detail)) from None
            raise
        except asyncio.CancelledError:
            holder = self._where.get(client_id)
            if holder is not None:
                task = asyncio.ensure_future(self.cancel(f"{holder}.{ref}", "cancelled"))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            raise
        kind = verdict.get("raise")
        if kind is None:
            return verdict.get("result")
        message = str(verdict.get("message", ""))
        if kind == "remote":
            raise jsonrpc.RemoteError(int(verdict.get("code", 0)), message, verdict.get("data"))
        if kind == "timeout":
            raise RequestTimeout(message)
        if kind == "cancelled":
            raise RequestCancelled(message)
        raise ClientGone(message)

    async def _serve_request(self, call: dict[str, Any]) -> dict[str, Any]:
        """Another instance's request for a client held here: send it, wait, report the outcome.
        ``RequestCancelled`` (a BaseException) and the others travel as data, not as errors."""
        session = self._sessions.get(str(call["client_id"]))
        if session is None:
            raise NotFound(f"no client with id {call['client_id']!r} is connected")
        timeout = min(float(call["timeout"]), self.max_timeout)
        ref = call.get("ref")
        if not (isinstance(ref, str) and len(ref) == 32 and set(ref) <= _HEX):
            ref = uuid.uuid4().hex
        rid = self._id_prefix + ref
        if rid in self._pending or rid in self._finished:
            raise InUse(f"request {rid!r} was already sent")
        self._serving += 1
        try:
            result = await self._request(session, str(call["method"]), call.get("params"), timeout, rid)
        except jsonrpc.RemoteError as exc:
            return {"raise": "remote", "code": exc.code, "message": exc.message, "data": exc.data}
        except RequestTimeout as exc:
            return {"raise": "timeout", "message": str(exc)}
        except RequestCancelled as exc:
            return {"raise": "cancelled", "message": str(exc)}
        except ClientGone as exc:
            if self._closed:
                raise Unavailable(
                    f"the instance holding client {session.client_id!r} is shutting down; "
                    "retry once the client has reconnected"
                ) from None
            return {"raise": "gone", "message": str(exc)}
        finally:
            self._serving -= 1
        return {"result": result}

    async def _serve_answer(self, call: dict[str, Any]) -> str:
        return self.answer(call.get("token"), call.get("body"))

    async def _serve_cancel(self, call: dict[str, Any]) -> bool:
        if str(call["id"]) not in self._pending:
            return False  # (never forwarded on again: the id named this instance)
        return await self.cancel(str(call["id"]), str(call.get("reason", "cancelled by the server")))

    async def _serve_notify(self, call: dict[str, Any]) -> None:
        if str(call["client_id"]) not in self._sessions:
            raise NotFound(f"no client with id {call['client_id']!r} is connected")
        await self.notify(str(call["client_id"]), str(call["method"]), call.get("params"))

    async def _serve_holds(self, client_id: Any) -> bool:
        return not self._closed and client_id in self._sessions

    async def _serve_find(self, client_id: Any) -> dict[str, Any] | None:
        session = None if self._closed or not isinstance(client_id, str) else self._sessions.get(client_id)
        return None if session is None else dict(session.meta)

    async def _serve_sessions(self, _: Any) -> list[dict[str, Any]]:
        return self.sessions()

    async def _serve_claim(self, call: dict[str, Any]) -> dict[str, Any]:
        """Hand a session over to the instance its client reconnected to (token checked here).

        The requests already sent keep waiting here (their ids name this instance, so answers
        still come here); the new holder re-sends them to the client on its stream."""
        session = self._sessions.get(str(call["client_id"]))
        if session is None:
            raise NotFound(f"no client with id {call['client_id']!r} is connected")
        if not tokens_equal(call.get("token"), session.token):
            raise Forbidden("wrong session token for this client id")
        self._remove(session)
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None
        session.moved_to = str(call["to"])
        old, session.stream = session.stream, None  # (so its on_close does not mark the session away)
        if old is not None:
            old.close("replaced")
        pending = [p.message for p in session.pending.values()] + list(session.inherited.values())
        return {"token": session.token, "pending": pending}

    # -- lifetime -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        """Fail every waiter (the server is going away) and forget all sessions."""
        self._closed = True
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(ClientGone("the server is shutting down"))
        for session in self._sessions.values():
            if session.expiry is not None:
                session.expiry.cancel()
        self._sessions.clear()
        self._by_client.clear()
        await asyncio.sleep(0)
        # Requests forwarded here report their 503 before the router closes (bounded wait).
        for _ in range(100):
            if self._serving == 0:
                break
            await asyncio.sleep(0.01)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran: the server is shutting down."""
        return self._closed

    def stats(self) -> dict[str, int]:
        return {"sessions": len(self._sessions), "pending": len(self._pending)}


def _check_client_id(client_id: str | None) -> None:
    if client_id is not None and (not 1 <= len(client_id) <= 64 or not set(client_id) <= _CLIENT_ID_OK):
        raise Invalid("client_id must be 1-64 characters of letters, digits, '-', '_' or '.'")


def _token(request: Request[Any, Any, Any]) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.query_params.get("token") or None


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    """The token of ``Authorization: Bearer <token>``, if any."""
    return _token(request)
