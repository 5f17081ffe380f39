"""Cross-instance forwarding for the correlator (``shared.correlation``), over a
:class:`~shared.routing.Router` (workers or hosts on one Redis).

A session lives on the instance its stream opened on (its *holder*); a request for a client held
elsewhere is forwarded to the holder, which sends it and waits for the answer as for any local
client, and sends the outcome back. Request ids start with the id of the instance that waits
(``<instance>.<hex>``), so an answer POSTed to any instance is routed there, with the same
400/403/404/409 outcomes. A client id held by one instance is refused on another without its
token (409); with it, the session moves (token and pending requests), and the requests already
sent are still answered where they wait.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from . import jsonrpc
from .hub import Hub
from .problems import Forbidden, InUse, NotFound, Problem, Unavailable
from .rpc_pending import RequestCancelled, Requests, RequestTimeout
from .rpc_sessions import ClientGone, Session, UnknownClient, _check_client_id
from .security import tokens_equal

if TYPE_CHECKING:
    from .routing import Router

__all__ = ["Forwarding"]

log = logging.getLogger(__name__)

_HEX = set("0123456789abcdef")
# A forwarded request waits this much longer than its own timeout for the holder's verdict, so
# the holder's "timed out" (with its cancel to the client) arrives before the caller gives up.
_FORWARD_MARGIN = 3.0
# How long a lookup of the instance holding a client may take before it counts as "nobody".
_LOOKUP_TIMEOUT = 2.0


class Forwarding(Requests):
    """Sessions and requests, and (with a ``router``) their instances connected."""

    def __init__(self, hub: Hub, *, router: Router | None, **rest: Any) -> None:
        super().__init__(hub, **rest)
        self.router = router
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

    async def _request_elsewhere(self, client_id: str, method: str, params: Any, timeout: float) -> Any:
        if self.router is None:
            raise UnknownClient(f"no client with id {client_id!r} is connected")
        return await self._forward(client_id, method, params, timeout)

    async def _notify_elsewhere(self, client_id: str, method: str, params: Any) -> None:
        if self.router is None:
            raise UnknownClient(f"no client with id {client_id!r} is connected")
        await self._on_holder(client_id, "rpc.notify", {"client_id": client_id, "method": method, "params": params})

    async def _cancel_elsewhere(self, request_id: str, reason: str) -> bool:
        owner = self._owner(request_id)
        if owner is None or self.router is None:
            return False
        try:
            return bool(await self.router.call(owner, "rpc.cancel", {"id": request_id, "reason": reason}))
        except Problem:
            return False  # that instance is gone, and its requests with it

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

    async def close(self) -> None:
        await super().close()
        await asyncio.sleep(0)
        # Requests forwarded here report their 503 before the router closes (bounded wait).
        for _ in range(100):
            if self._serving == 0:
                break
            await asyncio.sleep(0.01)
