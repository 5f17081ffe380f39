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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from litestar import Request
from litestar.exceptions import HTTPException, PermissionDeniedException, ValidationException
from litestar.response import Stream

from . import jsonrpc
from .encoding import encode, encode_json
from .hub import Hub, Subscription
from .responses import sse_response
from .security import tokens_equal

__all__ = [
    "AnswerRejected",
    "ClientGone",
    "Correlator",
    "RequestCancelled",
    "RequestTimeout",
    "Session",
    "UnknownClient",
]

_CLIENT_ID_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class RequestTimeout(TimeoutError):
    """No answer before the deadline; the client was sent ``event: cancel`` for the request."""


class RequestCancelled(asyncio.CancelledError):
    """The server side cancelled the request (``Correlator.cancel``)."""


class ClientGone(LookupError):
    """The client was away longer than the grace period (or the server is shutting down)."""


class UnknownClient(LookupError):
    """No session with that client id: it never connected, or it is gone."""


class AnswerRejected(HTTPException):
    """A POSTed answer that reaches no waiter: 400 invalid, 403 wrong token, 404 unknown id,
    409 already answered / timed out / cancelled. The detail says which."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(status_code=status_code, detail=detail)


@dataclass(eq=False)
class Session:
    client_id: str
    token: str
    stream: Subscription | None = None
    away_since: float | None = field(default_factory=time.monotonic)
    pending: dict[str, _Pending] = field(default_factory=dict)
    expiry: asyncio.TimerHandle | None = None

    @property
    def topic(self) -> str:
        return f"rpc:{self.client_id}"


@dataclass(eq=False)
class _Pending:
    id: str
    client_id: str
    message: dict[str, Any]
    deadline: float  # time.time(), sent to the client
    future: asyncio.Future[Any]


Outcome = Literal["answered", "timed out", "cancelled", "client gone"]


class Correlator:
    """Sessions and pending requests of one app. ``start()``/``close()`` with the app's lifespan."""

    def __init__(
        self,
        hub: Hub,
        *,
        grace: float = 30.0,
        default_timeout: float = 30.0,
        max_timeout: float = 600.0,
        max_pending_per_client: int = 100,
        max_sessions: int = 10_000,
        remember: int = 10_000,
    ) -> None:
        self.hub = hub
        self.grace = grace
        self.default_timeout = default_timeout
        self.max_timeout = max_timeout
        self.max_pending_per_client = max_pending_per_client
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._pending: dict[str, _Pending] = {}
        # Finished request ids -> (client id, outcome), so a late or second answer gets 409, not 404.
        self._finished: OrderedDict[str, tuple[str, Outcome]] = OrderedDict()
        self._remember = remember
        self._closed = False

    # -- sessions -----------------------------------------------------------------------------

    def sessions(self) -> list[dict[str, Any]]:
        """Connected and briefly-away clients, for pages that list them."""
        now = time.monotonic()
        return [
            {
                "client_id": s.client_id,
                "connected": s.stream is not None,
                "away_s": None if s.away_since is None else round(now - s.away_since, 1),
                "pending": len(s.pending),
            }
            for s in self._sessions.values()
        ]

    def has_session(self, client_id: str) -> bool:
        """Whether ``client_id`` is connected or briefly away (requests to it will be delivered)."""
        return client_id in self._sessions

    def open_session(self, client_id: str | None, token: str | None) -> Session:
        """Claim ``client_id`` (new, or taken over with its token); ``None`` picks a fresh id."""
        if self._closed:
            raise HTTPException(status_code=503, detail="server is shutting down", headers={"Retry-After": "1"})
        if client_id is not None and (not 1 <= len(client_id) <= 64 or not set(client_id) <= _CLIENT_ID_OK):
            raise HTTPException(
                status_code=400, detail="client_id must be 1-64 characters of letters, digits, '-', '_' or '.'"
            )
        cid = client_id or uuid.uuid4().hex[:12]
        session = self._sessions.get(cid)
        if session is None:
            if len(self._sessions) >= self.max_sessions:
                # Each session is kept for the grace period; a cap keeps a flood from eating memory.
                raise HTTPException(
                    status_code=429,
                    detail=f"too many client sessions ({self.max_sessions}); retry later",
                    headers={"Retry-After": str(max(1, int(self.grace)))},
                )
            session = self._sessions[cid] = Session(cid, secrets.token_urlsafe(24))
            self._schedule_expiry(session)  # forgotten unless its stream opens within the grace period
            return session
        if token is None:
            raise HTTPException(
                status_code=409,
                detail=f"client id {cid!r} is in use; reconnect with its session token, or pick another id",
            )
        if not tokens_equal(token, session.token):
            raise PermissionDeniedException("wrong session token for this client id")
        return session

    def stream(self, request: Request[Any, Any, Any], client_id: str | None = None) -> Stream:
        """The SSE response of a client's session: ``session``, pending requests, then live ones.

        The token for a takeover comes from ``Authorization: Bearer`` or, for a browser
        ``EventSource`` that cannot set headers, the ``token`` query parameter.
        """
        cid = client_id if client_id is not None else request.query_params.get("client_id")
        session = self.open_session(cid or None, _token(request))

        def opened(sub: Subscription) -> None:
            old = session.stream
            if old is not None:
                old.close("replaced")  # a takeover: the old stream ends, cleanly
            session.stream = sub
            session.away_since = None
            if session.expiry is not None:
                session.expiry.cancel()
                session.expiry = None

        async def prelude() -> bytes:
            hello = encode_json({"client_id": session.client_id, "token": session.token}, event="session")
            # Requests that are still pending (sent while away, or unanswered before a drop).
            queued = [encode_json(p.message, event="request") for p in session.pending.values()]
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
        del self._sessions[session.client_id]
        for p in list(session.pending.values()):
            if not p.future.done():
                p.future.set_exception(ClientGone(f"client {session.client_id!r} disconnected and did not come back"))

    # -- requests -----------------------------------------------------------------------------

    async def request(self, client_id: str, method: str, params: Any = None, *, timeout: float | None = None) -> Any:
        """Send a request to a client and wait for its answer; returns the ``result``.

        Raises :class:`RequestTimeout`, :class:`ClientGone`, :class:`UnknownClient`,
        :class:`RequestCancelled`, or :class:`jsonrpc.RemoteError` when the client answered an error.
        """
        session = self._sessions.get(client_id)
        if session is None:
            raise UnknownClient(f"no client with id {client_id!r} is connected")
        if len(session.pending) >= self.max_pending_per_client:
            raise HTTPException(
                status_code=429, detail=f"client {client_id!r} already has {len(session.pending)} pending requests"
            )
        timeout = self.default_timeout if timeout is None else min(timeout, self.max_timeout)
        rid = uuid.uuid4().hex  # unique across clients, restarts and instances
        loop = asyncio.get_running_loop()
        message = jsonrpc.request(rid, method, params)
        message["deadline"] = round(time.time() + timeout, 3)
        pending = _Pending(rid, client_id, message, message["deadline"], loop.create_future())
        self._pending[rid] = pending
        session.pending[rid] = pending
        outcome: Outcome = "client gone"
        try:
            if session.stream is not None:
                await self.hub.publish_json(session.topic, message, event="request", ephemeral=True)
            # (If the client is away, the request waits in session.pending for its next stream.)
            try:
                result = await asyncio.wait_for(asyncio.shield(pending.future), timeout)
            except TimeoutError:
                outcome = "timed out"
                # Closed before the await below, so an answer arriving meanwhile gets 409, not
                # "delivered" to a waiter that has already given up.
                self._forget(pending, session, outcome)
                await self._send_cancel(session, rid, "timeout")
                raise RequestTimeout(f"client {client_id!r} did not answer {method!r} within {timeout:g}s") from None
            except RequestCancelled:
                outcome = "cancelled"
                raise
            except asyncio.CancelledError:
                outcome = "cancelled"
                self._forget(pending, session, outcome)
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
            self._forget(pending, session, outcome)

    def _forget(self, pending: _Pending, session: Session, outcome: Outcome) -> None:
        """Close a request: out of the pending tables, into the bounded memory of finished ones."""
        if self._pending.pop(pending.id, None) is None:
            return  # already closed
        session.pending.pop(pending.id, None)
        self._finished[pending.id] = (pending.client_id, outcome)
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)

    async def notify(self, client_id: str, method: str, params: Any = None) -> None:
        """A request that needs no answer (no id). Dropped if the client is not connected."""
        session = self._sessions.get(client_id)
        if session is None:
            raise UnknownClient(f"no client with id {client_id!r} is connected")
        await self.hub.publish_json(
            session.topic, jsonrpc.notification(method, params), event="notification", ephemeral=True
        )

    async def cancel(self, request_id: str, reason: str = "cancelled by the server") -> bool:
        """Cancel a pending request: its waiter gets :class:`RequestCancelled`, the client a ``cancel``."""
        pending = self._pending.get(request_id)
        if pending is None or pending.future.done():
            return False
        pending.future.set_exception(RequestCancelled(reason))
        session = self._sessions.get(pending.client_id)
        if session is not None:
            self._forget(pending, session, "cancelled")  # an answer racing the cancel gets 409
            await self._send_cancel(session, request_id, reason)
        return True

    async def _send_cancel(self, session: Session, rid: str, reason: str) -> None:
        if session.stream is not None:
            await self.hub.publish_json(session.topic, {"id": rid, "reason": reason}, event="cancel", ephemeral=True)

    # -- answers ------------------------------------------------------------------------------

    def answer(self, token: str | None, body: Any) -> str:
        """Deliver a POSTed JSON-RPC response to its waiter; returns the request id.

        Raises :class:`AnswerRejected` (400/403/404/409) when it reaches no waiter.
        """
        try:
            ans = jsonrpc.parse_answer(body)
        except jsonrpc.InvalidMessage as exc:
            raise AnswerRejected(400, str(exc)) from None
        pending = self._pending.get(ans.id)
        if pending is not None:
            client_id = pending.client_id
        elif ans.id in self._finished:
            client_id = self._finished[ans.id][0]
        else:
            raise AnswerRejected(404, f"no request with id {ans.id!r} (never sent, or forgotten long ago)")
        session = self._sessions.get(client_id)
        if session is None or not tokens_equal(token, session.token):
            # Checked before anything else is revealed about the request.
            raise AnswerRejected(403, "this token cannot answer that request: it was sent to another client")
        if pending is None or pending.future.done():
            outcome = self._finished.get(ans.id, (client_id, "answered"))[1]
            raise AnswerRejected(409, f"request {ans.id!r} is already closed ({outcome}); this answer was dropped")
        if ans.error is not None:
            pending.future.set_exception(ans.error)
        else:
            pending.future.set_result(ans.result)
        return ans.id

    async def answer_request(self, request: Request[Any, Any, Any]) -> str:
        """:meth:`answer` for a POST handler: the body as JSON, the token from ``Authorization``."""
        try:
            body = await request.json()
        except ValidationException as exc:
            raise ValidationException(f"the body must be a JSON-RPC 2.0 response object; {exc.detail}") from None
        return self.answer(bearer_token(request), body)

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
        await asyncio.sleep(0)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran: the server is shutting down."""
        return self._closed

    def stats(self) -> dict[str, int]:
        return {"sessions": len(self._sessions), "pending": len(self._pending)}


def _token(request: Request[Any, Any, Any]) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.query_params.get("token") or None


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    """The token of ``Authorization: Bearer <token>``, if any."""
    return _token(request)
