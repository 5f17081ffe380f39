"""The dashboard's instances as one (issue 7): each request for a host is served by its owner.

A page may be connected to any instance and look at any host. What only the owner has (the
latest frame, the history, the audit log, the processes themselves) is fetched from it with a
routed call; a control action runs on the owner, which asks the acting page to confirm through
``shared.correlation`` (it forwards the question to the instance holding the page's session,
wherever the page last reconnected), and writes the audit record itself. With one instance every
"routed" call is a local function call, so single-instance behaviour is unchanged.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from litestar.exceptions import ClientException

from shared.encoding import encode_json
from shared.routing import Router

from .actions import parse_command
from .audit import AuditLog
from .auth import Actor
from .commands import Commander
from .hosts import Hosts
from .sampler import Sampler

__all__ = ["Cluster"]

# Methods one instance calls on another (over the router, namespace "dashboard").
PRELUDE, SNAPSHOT, HISTORY, AUDIT = "prelude", "snapshot", "history", "audit"
COMMAND = "command"


class Cluster:
    def __init__(
        self,
        router: Router,
        hosts: Hosts,
        sampler: Sampler,
        commander: Commander,
        audit: AuditLog,
    ) -> None:
        self.router = router
        self.hosts = hosts
        self.sampler = sampler
        self.commander = commander
        self.audit = audit
        # host -> the routed prelude call in flight (see remote_prelude)
        self._preludes: dict[str, asyncio.Task[Any]] = {}
        for method, fn in (
            (PRELUDE, self._prelude),
            (SNAPSHOT, self._snapshot),
            (HISTORY, self._history),
            (AUDIT, self._audit),
            (COMMAND, self._command),
        ):
            router.handle(method, fn)

    @property
    def me(self) -> str:
        return self.router.instance

    # -- what a page asks for, wherever it is connected -----------------------------------------

    def hosts_event(self) -> bytes:
        return encode_json(self.hosts.info(), event="hosts")

    async def remote_prelude(self, host: str) -> tuple[bytes, str | None]:
        """``hosts``, ``snapshot`` and ``history`` of a host this instance does not own, and the id
        of its topic's latest stored event at that moment (to stream from, without a gap).

        Viewers arriving together share one routed call (issue 13.5: 500 at once on a non-owner
        were 500 calls through one Redis pool, and some waited past the pool's timeout). Sharing
        is safe: the answer is at most one round trip older than the request, and the stream
        replays every stored event after its ``last_id``.
        """
        task = self._preludes.get(host)
        if task is None:
            task = asyncio.ensure_future(self.router.call(self.hosts.owner(host), PRELUDE))
            self._preludes[host] = task
            task.add_done_callback(functools.partial(self._prelude_done, host))
        # Shielded: a viewer that goes away does not cancel the call the others wait for.
        got = await asyncio.shield(task)
        body = (
            self.hosts_event()
            + encode_json(got["snapshot"], event="snapshot")
            + encode_json(got["history"], event="history")
        )
        return body, got.get("last_id")

    def _prelude_done(self, host: str, task: asyncio.Task[Any]) -> None:
        if self._preludes.get(host) is task:
            del self._preludes[host]
        if not task.cancelled():
            task.exception()  # retrieved: every viewer that waited has gone, nobody else will

    async def snapshot(self, host: str) -> Any:
        return await self.router.call(self.hosts.owner(host), SNAPSHOT)

    async def history(self, host: str) -> Any:
        return await self.router.call(self.hosts.owner(host), HISTORY)

    async def audit_log(self, host: str, limit: int, before: int | None) -> Any:
        return await self.router.call(self.hosts.owner(host), AUDIT, {"limit": limit, "before": before})

    async def command(self, host: str, body: dict[str, Any], actor: Actor) -> Any:
        """Check the command here (so a malformed one never travels) and run it on the host's owner."""
        try:
            cmd = parse_command(body)
        except ValueError as exc:
            raise ClientException(status_code=422, detail=str(exc)) from None
        self.commander.check_confirmable(cmd, actor)
        owner = self.hosts.owner(host)
        params = {"body": body, "actor": actor.to_json(), "origin": self.me}
        # The owner may wait for a person for confirm_timeout seconds, then for the process to end.
        return await self.router.call(owner, COMMAND, params, timeout=self.commander.confirm_timeout + 15)

    # -- the handlers (on the owner, or on the instance holding a session) ----------------------

    async def _prelude(self, params: Any) -> dict[str, Any]:
        return {
            "snapshot": self.sampler.snapshot(),
            "history": self.sampler.history_json(),
            "last_id": await self.router.hub.backend.latest_id(self.sampler.topic),
        }

    async def _snapshot(self, params: Any) -> dict[str, Any]:
        return self.sampler.snapshot()

    async def _history(self, params: Any) -> dict[str, Any]:
        return self.sampler.history_json()

    async def _audit(self, params: Any) -> list[dict[str, Any]]:
        return await self.audit.arecent(int(params["limit"]), params.get("before"))

    async def _command(self, params: Any) -> dict[str, Any]:
        try:
            cmd = parse_command(params["body"])
        except ValueError as exc:
            raise ClientException(status_code=422, detail=str(exc)) from None
        actor = Actor.from_json(params["actor"])
        origin = str(params.get("origin") or self.me)
        return await self.commander.run(cmd, actor, via="" if origin == self.me else origin)
