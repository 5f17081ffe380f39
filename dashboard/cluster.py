"""The dashboard's instances as one (issue 7): each request for a host is served by its owner.

A page may be connected to any instance and look at any host. What only the owner has (the
latest frame, the history, the audit log, the processes themselves) is fetched from it with a
routed call; a control action runs on the owner, which asks the acting page to confirm through
the instance that holds the page's session, and writes the audit record itself. With one
instance every "routed" call is a local function call, so single-instance behaviour is unchanged.
"""

from __future__ import annotations

from typing import Any

from litestar.exceptions import ClientException, HTTPException

from shared.correlation import Correlator
from shared.encoding import encode_json
from shared.routing import Router

from .actions import Refused, parse_command
from .audit import AuditLog
from .auth import Actor
from .commands import Ask, Commander
from .hosts import Hosts
from .sampler import Sampler

__all__ = ["Cluster"]

# Methods one instance calls on another (over the router, namespace "dashboard").
PRELUDE, SNAPSHOT, HISTORY, AUDIT = "prelude", "snapshot", "history", "audit"
COMMAND, CONFIRM, HAS_SESSION = "command", "confirm", "has_session"
FIND_SESSION_TIMEOUT = 3.0


class Cluster:
    def __init__(
        self,
        router: Router,
        hosts: Hosts,
        sampler: Sampler,
        commander: Commander,
        correlator: Correlator,
        audit: AuditLog,
    ) -> None:
        self.router = router
        self.hosts = hosts
        self.sampler = sampler
        self.commander = commander
        self.correlator = correlator
        self.audit = audit
        for method, fn in (
            (PRELUDE, self._prelude),
            (SNAPSHOT, self._snapshot),
            (HISTORY, self._history),
            (AUDIT, self._audit),
            (COMMAND, self._command),
            (CONFIRM, self._confirm),
            (HAS_SESSION, self._has_session),
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
        of its topic's latest stored event at that moment (to stream from, without a gap)."""
        got = await self.router.call(self.hosts.owner(host), PRELUDE)
        body = (
            self.hosts_event()
            + encode_json(got["snapshot"], event="snapshot")
            + encode_json(got["history"], event="history")
        )
        return body, got.get("last_id")

    async def snapshot(self, host: str) -> Any:
        return await self.router.call(self.hosts.owner(host), SNAPSHOT)

    async def history(self, host: str) -> Any:
        return await self.router.call(self.hosts.owner(host), HISTORY)

    async def audit_log(self, host: str, limit: int, before: int | None) -> Any:
        return await self.router.call(self.hosts.owner(host), AUDIT, {"limit": limit, "before": before})

    async def command(self, host: str, body: dict[str, Any], actor: Actor) -> Any:
        """Check the command here (so a malformed one never travels), find the page that confirms
        it, and run it on the host's owner."""
        try:
            cmd = parse_command(body)
        except ValueError as exc:
            raise ClientException(status_code=422, detail=str(exc)) from None
        asker = None
        if self.commander.check_confirmable(cmd, actor):
            assert cmd.client_id is not None
            asker = await self._find_session(cmd.client_id)
            if asker is None:
                raise self.commander.no_session(cmd)
        owner = self.hosts.owner(host)
        params = {
            "body": body,
            "actor": {"via": actor.via, "address": actor.address},
            "asker": asker,
            "origin": self.me,
        }
        # The owner may wait for a person for confirm_timeout seconds, then for the process to end.
        return await self.router.call(owner, COMMAND, params, timeout=self.commander.confirm_timeout + 15)

    async def _find_session(self, client_id: str) -> str | None:
        """The instance holding page session ``client_id``: usually this one; with several workers
        behind one address the page's session stream may have landed on another."""
        if self.correlator.has_session(client_id):
            return self.me
        answers = await self.router.call_all(HAS_SESSION, client_id, timeout=FIND_SESSION_TIMEOUT)
        return next((name for name, yes in answers.items() if yes is True), None)

    def remote_ask(self, instance: str) -> Ask:
        async def ask(client_id: str, params: dict[str, Any], timeout: float) -> Any:
            try:
                reply = await self.router.call(
                    instance,
                    CONFIRM,
                    {"client_id": client_id, "params": params, "timeout": timeout},
                    timeout=timeout + 5,
                )
            except HTTPException as exc:
                detail = f"not done: the confirming page could not be reached ({exc.detail})"
                raise Refused(409, "unanswered", detail) from None
            if isinstance(reply, dict) and isinstance(reply.get("refused"), list):
                status, outcome, message = reply["refused"]
                raise Refused(int(status), str(outcome), str(message))
            return reply.get("answer") if isinstance(reply, dict) else None

        return ask

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
        a = params["actor"]
        actor = Actor("bearer" if a.get("via") == "bearer" else "cookie", str(a.get("address", "unknown")))
        asker, origin = params.get("asker"), str(params.get("origin") or self.me)
        ask = None if asker is None or asker == self.me else self.remote_ask(str(asker))
        return await self.commander.run(cmd, actor, ask, via="" if origin == self.me else origin)

    async def _confirm(self, params: Any) -> dict[str, Any]:
        try:
            answer = await self.commander.local_ask(
                str(params["client_id"]), params["params"], float(params["timeout"])
            )
        except Refused as exc:
            return {"refused": [exc.status_code, exc.outcome, exc.message]}
        return {"answer": answer}

    async def _has_session(self, params: Any) -> bool:
        return isinstance(params, str) and self.correlator.has_session(params)
