"""Pending requests of the correlator (``shared.correlation``): server-to-client JSON-RPC requests,
each a one-shot waiter matched to its answer by id, never "the oldest waiter".

Every waiter is removed in ``finally``: a late answer is refused with 409, never leaked.
Delivery is at-least-once with dedupe by id: a stream (re)opening first gets every request still
pending for its client, then live ones. A client away longer than the grace period is gone: its
pending requests fail at once with :class:`~shared.rpc_sessions.ClientGone`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from . import jsonrpc
from .hub import Hub
from .metrics import PendingTable, count, track_pending
from .problems import Problem, TooMany
from .rpc_sessions import ClientGone, Session, SessionTable, UnknownClient
from .security import tokens_equal

__all__ = ["AnswerRejected", "RequestCancelled", "RequestTimeout", "Requests"]


class RequestTimeout(TimeoutError):
    """No answer before the deadline; the client was sent ``event: cancel`` for the request."""


class RequestCancelled(asyncio.CancelledError):
    """The server side cancelled the request (``Correlator.cancel``)."""


class AnswerRejected(Problem):
    """A POSTed answer that reaches no waiter: 400 invalid, 403 wrong token, 404 unknown id,
    409 already answered / timed out / cancelled. The detail says which."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail, status_code=status_code)


@dataclass(eq=False)
class _Pending:
    id: str
    session: Session
    message: dict[str, Any]
    deadline: float  # time.time(), sent to the client
    future: asyncio.Future[Any]


Outcome = Literal["answered", "timed out", "cancelled", "client gone"]


class Requests(SessionTable):
    """Sessions, and the requests pending on them."""

    def __init__(
        self,
        hub: Hub,
        *,
        default_timeout: float,
        max_timeout: float,
        max_pending_per_client: int,
        remember: int,
        **sessions: Any,
    ) -> None:
        super().__init__(hub, **sessions)
        self.default_timeout = default_timeout
        self.max_timeout = max_timeout
        self.max_pending_per_client = max_pending_per_client
        self._pending: dict[str, _Pending] = PendingTable()
        track_pending(self._pending)
        # Finished request ids -> (session, outcome), so a late or second answer gets 409, not 404.
        self._finished: OrderedDict[str, tuple[Session, Outcome]] = OrderedDict()
        self._remember = remember
        self._id_prefix = ""  # with several instances, the waiting one's id (see Forwarding)

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
            return await self._request_elsewhere(client_id, method, params, timeout)
        return await self._request(session, method, params, timeout, self._id_prefix + uuid.uuid4().hex)

    async def _request_elsewhere(self, client_id: str, method: str, params: Any, timeout: float) -> Any:
        """A request for a client this instance does not hold (see ``Forwarding``)."""
        raise UnknownClient(f"no client with id {client_id!r} is connected")

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
            await self._notify_elsewhere(client_id, method, params)
            return
        await self.hub.publish_json(
            session.topic, jsonrpc.notification(method, params), event="notification", ephemeral=True
        )

    async def _notify_elsewhere(self, client_id: str, method: str, params: Any) -> None:
        raise UnknownClient(f"no client with id {client_id!r} is connected")

    async def cancel(self, request_id: str, reason: str = "cancelled by the server") -> bool:
        """Cancel a pending request: its waiter gets :class:`RequestCancelled`, the client a ``cancel``."""
        pending = self._pending.get(request_id)
        if pending is None:
            return await self._cancel_elsewhere(request_id, reason)
        if pending.future.done():
            return False
        pending.future.set_exception(RequestCancelled(reason))
        self._forget(pending, "cancelled")  # an answer racing the cancel gets 409
        await self._send_cancel(pending.session, request_id, reason)
        return True

    async def _cancel_elsewhere(self, request_id: str, reason: str) -> bool:
        return False  # (a request that waits on another instance: see Forwarding)

    async def _send_cancel(self, session: Session, rid: str, reason: str) -> None:
        if session.stream is not None or session.moved_to is not None:
            await self.hub.publish_json(session.topic, {"id": rid, "reason": reason}, event="cancel", ephemeral=True)

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

    async def close(self) -> None:
        """Fail every waiter (the server is going away) and forget all sessions."""
        self._closed = True
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(ClientGone("the server is shutting down"))
        await super().close()

    def stats(self) -> dict[str, int]:
        return {"sessions": len(self._sessions), "pending": len(self._pending)}
