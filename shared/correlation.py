"""Server-to-client requests over SSE, answered by POST and matched by id: the correlator.

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

The correlator is built by concept: ``rpc_sessions`` (sessions and their caps), ``rpc_pending``
(pending requests and answers), ``rpc_forwarding`` (several instances), none of which imports a
web framework; this module adds the HTTP glue (the stream response, the answer endpoint) and
re-exports the public names.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from litestar import Request
from litestar.exceptions import ValidationException
from litestar.response import Stream

from . import jsonrpc
from .encoding import encode, encode_json
from .hub import Hub, Subscription
from .limits import client_address
from .responses import sse_response
from .rpc_forwarding import Forwarding
from .rpc_pending import AnswerRejected, RequestCancelled, RequestTimeout
from .rpc_sessions import ClientGone, Session, UnknownClient
from .security import bearer

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
    "bearer_token",
]


class Correlator(Forwarding):
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
        super().__init__(
            hub,
            grace=grace,
            max_sessions=max_sessions,
            max_sessions_per_client=max_sessions_per_client,
            limit_loopback=limit_loopback,
            default_timeout=default_timeout,
            max_timeout=max_timeout,
            max_pending_per_client=max_pending_per_client,
            remember=remember,
            router=router,
        )

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


def _token(request: Request[Any, Any, Any]) -> str | None:
    return bearer(request.headers.get("authorization")) or request.query_params.get("token") or None


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    """The token of ``Authorization: Bearer <token>``, if any."""
    return _token(request)
