"""Calls between instances of one app, over its backend: route an action to its owner.

With several workers or hosts on one Redis, some things live in exactly one process: a child
process of remote exec, a browser's pending request, the host whose metrics a dashboard shows.
An action POSTed to another instance is forwarded to the owner with :meth:`Router.call`, and
the owner's answer (or its HTTP error, status and detail intact) comes back to the caller, so a
client cannot tell which instance it reached.

Each instance listens on its own inbox topic; calls and replies are *ephemeral* events (never
stored, never replayed): a call nobody answers in time fails with 504, which is the honest
outcome when the owner is gone. Instances announce themselves on a shared topic every
``beat`` seconds with a little metadata (``peers()``), so apps can list them, e.g. the hosts of
a dashboard; an instance not heard from for three beats is considered gone.

With the memory backend there is one instance and every call is a local function call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .backends import BackendUnavailable
from .hub import Hub
from .problems import NoHandler, PeerFailed, PeerTimeout, Problem, Unavailable, problem_of

__all__ = ["Handler", "Peer", "Router", "new_instance_id"]

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any]]


def new_instance_id() -> str:
    """Host, pid and a random suffix: readable in logs, unique across restarts."""
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class Peer:
    instance: str
    meta: dict[str, Any]
    seen: float = field(default_factory=time.monotonic)


class Router:
    """Instance-to-instance calls for one app. ``start()`` after the hub's, ``close()`` before it.

    ``namespace`` keeps the topics of different apps on one backend apart.
    """

    def __init__(
        self,
        hub: Hub,
        namespace: str,
        *,
        instance: str | None = None,
        meta: dict[str, Any] | None = None,
        beat: float = 2.0,
        timeout: float = 10.0,
    ) -> None:
        self.hub = hub
        self.namespace = namespace
        self.instance = instance or new_instance_id()
        self.meta = dict(meta or {})
        self.beat = beat
        self.timeout = timeout
        self._handlers: dict[str, Handler] = {}
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._callee: dict[str, str] = {}  # call id -> the instance it waits on
        self._peers: dict[str, Peer] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        # Called with (instance, alive) when another instance is first heard from, comes back, or
        # is forgotten (its goodbye, or three missed beats): apps that show what lives on other
        # instances tell their clients at once (exec: a run's owner is unreachable).
        self.on_change: list[Callable[[str, bool], None]] = []

    # -- topics -----------------------------------------------------------------------------

    def _inbox(self, instance: str) -> str:
        return f"{self.namespace}:route:{instance}"

    @property
    def _roll(self) -> str:
        return f"{self.namespace}:route-peers"

    # -- handlers and calls -----------------------------------------------------------------

    def handle(self, method: str, fn: Handler) -> None:
        """Serve ``method`` for other instances (and for local calls). Raise a ``Problem`` (or an
        app's HTTP exception) for 4xx/5xx outcomes: the caller gets the same status and detail."""
        self._handlers[method] = fn

    async def call(self, instance: str, method: str, params: Any = None, *, timeout: float | None = None) -> Any:
        """Run ``method`` on ``instance`` and return its result; its errors are re-raised here as
        :class:`~shared.problems.Problem` with the same status and detail.

        ``Unavailable`` (503) if the instance is unknown or gone, or goes away while the call waits
        (a goodbye, or three missed beats after a ``kill -9``); ``PeerTimeout`` (504) if it did not
        answer within ``timeout``.
        """
        if instance == self.instance:
            try:
                return await self._dispatch(method, params)
            except Exception as exc:
                problem = problem_of(exc)
                if problem is None or problem is exc:
                    raise
                raise problem from exc  # as a remote call would: the same error, however it was raised
        if instance not in self.peers():
            raise Unavailable(f"instance {instance!r} is not reachable (stopped, or not started yet)")
        timeout = self.timeout if timeout is None else timeout
        cid = uuid.uuid4().hex
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = future
        self._callee[cid] = instance
        try:
            message = {"id": cid, "from": self.instance, "method": method, "params": params}
            await self._send(self._inbox(instance), message, "call")
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                raise PeerTimeout(f"instance {instance!r} did not answer {method!r} within {timeout:g}s") from None
        finally:
            self._waiting.pop(cid, None)
            self._callee.pop(cid, None)

    async def call_all(self, method: str, params: Any = None, *, timeout: float | None = None) -> dict[str, Any]:
        """``call`` every live instance (this one included); failures come back as exceptions."""
        names = list(self.peers())
        results = await asyncio.gather(
            *(self.call(name, method, params, timeout=timeout) for name in names), return_exceptions=True
        )
        return dict(zip(names, results, strict=True))

    @property
    def alone(self) -> bool:
        """True when no other instance can exist: the backend lives inside this process."""
        return not self.hub.backend.spans_processes

    def peers(self) -> dict[str, Peer]:
        """Instances heard from within three beats, this one first."""
        cutoff = time.monotonic() - 3 * self.beat
        alive = {self.instance: Peer(self.instance, self.meta)}
        alive.update((k, p) for k, p in self._peers.items() if p.seen >= cutoff and k != self.instance)
        return alive

    async def _dispatch(self, method: str, params: Any) -> Any:
        fn = self._handlers.get(method)
        if fn is None:
            raise NoHandler(f"no instance handler for {method!r}")
        return await fn(params)

    async def _send(self, topic: str, message: dict[str, Any], event: str) -> None:
        try:
            await self.hub.backend.append(topic, json.dumps(message, separators=(",", ":")), event, ephemeral=True)
        except BackendUnavailable as exc:
            raise Unavailable(f"the backend is unavailable: {exc}") from None

    # -- serving ----------------------------------------------------------------------------

    async def _serve_call(self, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": message.get("id")}
        try:
            reply["result"] = await self._dispatch(str(message.get("method")), message.get("params"))
        except Exception as exc:
            problem = problem_of(exc)
            if problem is None:  # a bug in a handler must still answer, or the caller waits
                log.exception("routed call %r failed", message.get("method"))
                problem = PeerFailed(f"instance {self.instance!r} failed: {exc}")
            reply["error"] = {
                "status_code": problem.status_code,
                "detail": problem.detail,
                "extra": problem.extra,
                "headers": problem.headers,
            }
        with contextlib.suppress(Problem):  # the caller times out if the reply is lost
            await self._send(self._inbox(str(message.get("from"))), reply, "reply")

    def _take_reply(self, message: dict[str, Any]) -> None:
        future = self._waiting.get(str(message.get("id")))
        if future is None or future.done():
            return  # the caller gave up
        error = message.get("error")
        if error is None:
            future.set_result(message.get("result"))
        else:
            future.set_exception(
                Problem(
                    str(error.get("detail", "")),
                    status_code=int(error.get("status_code", 502)),
                    extra=error.get("extra") or None,
                    headers=error.get("headers") or None,
                )
            )

    async def _listen(self, topic: str, on: Callable[[str | None, dict[str, Any]], None]) -> None:
        # The backend's listen() already waits out an outage and resumes; this loop only
        # restarts it if it ends with an error, until close().
        while not self._closed:
            try:
                async for batch in self.hub.backend.listen(topic, None):
                    for entry in batch:
                        try:
                            message = json.loads(entry.data)
                        except ValueError:
                            continue
                        if isinstance(message, dict):
                            on(entry.event, message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("router %s: listening on %s failed (%s); retrying", self.instance, topic, exc)
            if not self._closed:
                await asyncio.sleep(0.5)

    def _on_inbox(self, event: str | None, message: dict[str, Any]) -> None:
        if event == "call":
            self._spawn(self._serve_call(message))
        elif event == "reply":
            self._take_reply(message)

    def _on_roll(self, event: str | None, message: dict[str, Any]) -> None:
        name = message.get("instance")
        if not isinstance(name, str) or name == self.instance:
            return
        if event == "bye":
            if self._peers.pop(name, None) is not None:
                self._changed(name, False)
            self._fail_calls_to(name)
            return
        meta = message.get("meta")
        known = name in self.peers()
        self._peers[name] = Peer(name, meta if isinstance(meta, dict) else {})
        if not known:
            self._changed(name, True)
        if event == "hello":
            self._spawn(self._announce("beat"))  # so a new instance learns of us at once

    def _changed(self, instance: str, alive: bool) -> None:
        for hook in list(self.on_change):
            try:
                hook(instance, alive)
            except Exception:  # one app's bug must not stop the router
                log.exception("router %s: a peer-change hook failed", self.instance)

    def _fail_calls_to(self, instance: str) -> None:
        """Calls waiting on an instance that is gone get 503 now, not 504 at their timeout."""
        for cid, callee in list(self._callee.items()):
            future = self._waiting.get(cid)
            if callee == instance and future is not None and not future.done():
                future.set_exception(Unavailable(f"instance {instance!r} stopped before answering"))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _announce(self, event: str) -> None:
        with contextlib.suppress(Problem):
            await self._send(self._roll, {"instance": self.instance, "meta": self.meta}, event)

    async def _beats(self) -> None:
        await self._announce("hello")
        # Checks _closed too: redis-py can swallow a cancel that lands while it connects.
        while not self._closed:
            await asyncio.sleep(self.beat)
            lost = [name for name in self._peers if name not in self.peers()]
            for name in lost:  # silent for three beats (killed): its callers get 503 now
                self._peers.pop(name, None)
                self._fail_calls_to(name)
                self._changed(name, False)
            await self._announce("beat")

    # -- lifetime ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False
        for coro in (
            self._listen(self._inbox(self.instance), self._on_inbox),
            self._listen(self._roll, self._on_roll),
        ):
            self._tasks.append(asyncio.create_task(coro, name=f"router-{self.namespace}"))
        # Listening first, so the answers to our hello are not missed.
        await asyncio.sleep(0.05)
        self._tasks.append(asyncio.create_task(self._beats(), name=f"router-beat-{self.namespace}"))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.hub.closing:  # else the backend is going or gone; peers time us out instead
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._announce("bye"), 1.0)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(Unavailable("server is shutting down"))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task whose cancel redis-py swallowed must not hold up shutdown.
            await asyncio.wait(tasks, timeout=2.0)

    def stats(self) -> dict[str, int]:
        return {"peers": len(self.peers()), "waiting": len(self._waiting), "tasks": len(self._tasks)}
