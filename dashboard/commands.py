"""Running a command: broadcast, confirm with the acting browser, act, audit, answer.

Every authorised, well-formed command is broadcast to all viewers as ``command`` events
(``started``, ``confirming`` when a person is asked, then ``succeeded`` or ``failed`` with the
reason) and ends as one row in the audit log. The POST waits for the outcome and answers it.

Confirmation is a server-to-client request (``shared.correlation``): the page that acts opened a
session stream and passes its ``client_id``; the server asks that page, with a deadline, and acts
only on an explicit yes. No answer in time, a "no", or the page going away: nothing happens.

Only a person logged in can confirm (issue 14.1): the page session must have been opened with a
live login cookie (``session_events`` notes which), and for a browser's command with the *same*
login that sent it, so a page session opened without that login (an anonymous one, as curl
opens, or another login's) cannot say yes for it. The login must still be live when the yes
arrives (a log-out in between: nothing is done). The audit row names both sessions.

With several instances (issue 7) the command runs on the instance that owns the host, while the
page's session may live on another one, or move to another one when the page reconnects there:
the correlator has the app's router and forwards the question to whichever instance holds the
session at that moment (issue 13), as ``/bidi/`` does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar.exceptions import ClientException, HTTPException

from shared import jsonrpc
from shared.correlation import ClientGone, Correlator, RequestCancelled, RequestTimeout, UnknownClient
from shared.hub import Hub
from shared.metrics import count
from shared.problems import Problem

from . import actions
from .actions import Command, Refused
from .audit import AuditLog, AuditRecord
from .auth import Actor, ControlAuth
from .sampler import Sampler

__all__ = ["Ask", "Commander", "local_ask"]

# (client_id, confirmation params, timeout) -> the page's answer; raises Refused when there is none.
Ask = Callable[[str, dict[str, Any], float], Awaitable[Any]]


def local_ask(correlator: Correlator) -> Ask:
    """Ask a page through the correlator (which forwards to the instance holding its session)."""

    async def ask(client_id: str, params: dict[str, Any], timeout: float) -> Any:
        try:
            return await correlator.request(client_id, "confirm", params, timeout=timeout)
        except jsonrpc.RemoteError as exc:
            raise Refused(409, "declined", f"not done: {exc.message or 'declined'}") from None
        except RequestTimeout:
            raise Refused(409, "unanswered", f"not done: no confirmation within {timeout:g} s") from None
        except (ClientGone, UnknownClient):
            if correlator.closed:
                raise Refused(503, "unanswered", "not done: the server is shutting down") from None
            raise Refused(409, "unanswered", "not done: the confirming page went away") from None
        except RequestCancelled:
            raise Refused(409, "unanswered", "not done: the confirmation was cancelled") from None
        except Problem as exc:  # the instance holding the page's session: unreachable, stopping
            detail = f"not done: the confirming page could not be reached ({exc.detail})"
            raise Refused(409, "unanswered", detail) from None

    return ask


def public_target(target: dict[str, Any] | None) -> dict[str, Any] | None:
    """A target as view-only viewers may see it: without its command line."""
    return None if target is None else {k: v for k, v in target.items() if k != "cmdline"}


@dataclass(slots=True)
class _Run:
    id: str
    cmd: Command
    actor: Actor
    target: dict[str, Any] | None = None
    via: str = ""
    confirmer: str | None = None  # the login key of the page session asked to confirm
    confirmed: bool = False

    def event(self, phase: str, detail: str = "", outcome: str | None = None) -> dict[str, Any]:
        return {
            "command_id": self.id,
            "phase": phase,
            "outcome": outcome,
            "action": self.cmd.action,
            "params": self.cmd.params,
            # Every viewer (logged in or not) reads these events: no command line, which can hold
            # secrets (an --api-key=...; issue 14.10). Controllers see it in the question and the
            # POST's answer.
            "target": public_target(self.target),
            "who": self.actor.label,
            "client_id": self.cmd.client_id,
            "detail": detail,
            "at": round(time.time(), 3),
        }


class Commander:
    def __init__(
        self,
        hub: Hub,
        sampler: Sampler,
        correlator: Correlator,
        audit: AuditLog,
        auth: ControlAuth,
        *,
        confirm_timeout: float = 30.0,
    ) -> None:
        self.hub = hub
        self.sampler = sampler
        self.correlator = correlator
        self.audit = audit
        self.auth = auth
        self.confirm_timeout = confirm_timeout
        self.local_ask = local_ask(correlator)

    @property
    def topic(self) -> str:
        return self.sampler.topic

    def needs_confirmation(self, cmd: Command, actor: Actor) -> bool:
        """Dangerous process actions are confirmed by a person, except when a Bearer client says
        ``"confirm": false``: such a client holds the token itself and has no one to ask, and a
        browser cannot be made to send an Authorization header cross-site. A logged-in browser
        (cookie) is always asked, so a forged request could never skip the question."""
        if cmd.action not in actions.CONFIRMED_ACTIONS:
            return False
        return cmd.confirm or actor.via != "bearer"

    def check_confirmable(self, cmd: Command, actor: Actor) -> bool:
        """Whether ``cmd`` will be confirmed; 422 if it must be but names no page to ask."""
        confirm = self.needs_confirmation(cmd, actor)
        if confirm and cmd.client_id is None:
            raise ClientException(
                status_code=422,
                detail=f"{cmd.action} must be confirmed: pass the client_id of your page's session "
                '(GET /dashboard/session/events); Bearer clients may send "confirm": false instead',
            )
        return confirm

    @staticmethod
    def no_session(cmd: Command) -> ClientException:
        return ClientException(
            status_code=422,
            detail=f"no page session with client_id {cmd.client_id!r} is connected to confirm {cmd.action}",
        )

    async def run(self, cmd: Command, actor: Actor, ask: Ask | None = None, *, via: str = "") -> dict[str, Any]:
        """Run ``cmd`` here. ``ask`` reaches the confirming page (default: through the correlator,
        wherever its session is held); ``via`` names the instance the command came through, for
        the audit log."""
        confirm = self.check_confirmable(cmd, actor)
        page: dict[str, Any] | None = None
        if confirm:
            page = await self.correlator.find(str(cmd.client_id))
            if page is None:
                raise self.no_session(cmd)
        ask = ask or self.local_ask
        run = _Run(uuid.uuid4().hex[:12], cmd, actor, via=via)
        await self._broadcast(run, "started")
        try:
            if cmd.action in actions.SETTINGS_ACTIONS:
                detail = await self._settings(cmd, actor)
            else:
                if page is not None:
                    run.confirmer = await self._confirmer(cmd, actor, page)
                detail = await self._process(run, confirm, ask)
        except asyncio.CancelledError:
            await asyncio.shield(self._finish(run, "failed", "interrupted before it finished (server shutting down)"))
            raise
        except Refused as exc:
            await self._finish(run, exc.outcome, exc.message)
            raise ClientException(
                status_code=exc.status_code,
                detail=exc.message,
                extra={"command_id": run.id, "outcome": exc.outcome},
            ) from None
        await self._finish(run, "succeeded", detail)
        return {
            "command_id": run.id,
            "status": "succeeded",
            "action": cmd.action,
            "target": run.target,
            "detail": detail,
        }

    async def _confirmer(self, cmd: Command, actor: Actor, page: dict[str, Any]) -> str:
        """The login key of the page session that is to confirm ``cmd``; ``Refused`` (403) unless
        that page was opened by a live login, and by the actor's own one if it is a browser."""
        login = page.get("login")
        rule = (
            "a confirmation is accepted only from a page session opened by the same login that sent the command"
            if actor.via == "cookie"
            else "a Bearer client's command is confirmed only by a page session opened by a logged-in browser "
            '(or send "confirm": false)'
        )
        if not isinstance(login, str):
            raise Refused(403, "refused", f"not done: page session {cmd.client_id!r} was not opened by a login; {rule}")
        if actor.via == "cookie" and login != actor.session:
            raise Refused(403, "refused", f"not done: page session {cmd.client_id!r} belongs to another login; {rule}")
        if not await self._live(login):
            raise Refused(
                403, "refused", f"not done: the login that opened page session {cmd.client_id!r} has ended; {rule}"
            )
        return login

    async def _live(self, key: str) -> bool:
        try:
            return await self.auth.live(key) is not None
        except HTTPException as exc:  # the sessions' Redis is unreachable: nothing is done
            raise Refused(503, "unanswered", f"not done: the login could not be checked ({exc.detail})") from None

    async def _settings(self, cmd: Command, actor: Actor) -> str:
        s = self.sampler
        if cmd.action == "set_interval":
            assert cmd.seconds is not None
            s.set_interval(cmd.seconds)
            detail = f"sampling every {cmd.seconds:g} s"
        elif cmd.action == "pause_sampling":
            s.set_paused(True)
            detail = "sampling paused"
        elif cmd.action == "resume_sampling":
            s.set_paused(False)
            detail = "sampling resumed"
        else:
            assert cmd.rules is not None
            await s.set_rules(cmd.rules)
            detail = "alert rules: " + ("; ".join(r.label for r in cmd.rules) or "none")
        await self.hub.publish_json(self.topic, {**s.settings(), "by": actor.label, "detail": detail}, event="settings")
        return detail

    async def _process(self, run: _Run, confirm: bool, ask: Ask) -> str:
        cmd = run.cmd
        assert cmd.pid is not None
        assert cmd.start_time is not None
        proc = await asyncio.to_thread(actions.resolve, cmd.action, cmd.pid, cmd.start_time)
        run.target = await asyncio.to_thread(actions.describe, proc)
        if confirm:
            assert cmd.client_id is not None
            await self._broadcast(run, "confirming", f"waiting for {cmd.client_id} to confirm")
            await self._confirm(run, ask)
        return await asyncio.to_thread(actions.perform, proc, cmd.action, cmd.nice)

    async def _confirm(self, run: _Run, ask: Ask) -> None:
        cmd = run.cmd
        assert cmd.client_id is not None
        assert run.target is not None
        question = f"{cmd.action} {actions.target_text(run.target)}?"
        params = {
            "command_id": run.id,
            "action": cmd.action,
            "target": run.target,
            "params": cmd.params,
            "question": question,
            "timeout_s": self.confirm_timeout,
        }
        answer = await ask(cmd.client_id, params, self.confirm_timeout)
        if not (isinstance(answer, dict) and answer.get("confirmed") is True):
            # Only an explicit yes acts; any other result is a no.
            raise Refused(409, "declined", "not done: the operator did not confirm")
        # A log-out (or expiry) while the question was open: the yes no longer counts.
        for key in dict.fromkeys((run.confirmer, run.actor.session)):
            if key is not None and not await self._live(key):
                raise Refused(403, "refused", "not done: the login ended (logged out or expired) before the answer")
        run.confirmed = True

    async def _broadcast(self, run: _Run, phase: str, detail: str = "", outcome: str | None = None) -> None:
        await self.hub.publish_json(self.topic, run.event(phase, detail, outcome), event="command")

    async def _finish(self, run: _Run, outcome: str, detail: str) -> None:
        target = actions.target_text(run.target) if run.target else None
        if target is None and run.cmd.pid is not None:
            target = f"PID {run.cmd.pid}"
        who = run.actor.label + (f", page {run.cmd.client_id}" if run.cmd.client_id else "")
        if run.via:
            who += f", via instance {run.via}"
        confirmed_by = None
        if run.confirmer is not None and run.confirmed:
            confirmed_by = f"login {run.confirmer[:12]}, page {run.cmd.client_id}"
        record = AuditRecord(
            run.id,
            who,
            run.cmd.action,
            target,
            run.cmd.params,
            outcome,
            detail,
            asked_by=run.actor.ref,
            confirmed_by=confirmed_by,
        )
        await self.audit.awrite(record)
        count("dashboard_actions", "result", outcome)
        phase = "succeeded" if outcome == "succeeded" else "failed"
        await self._broadcast(run, phase, detail, outcome)
