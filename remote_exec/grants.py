"""Open streams, by the credentials they were opened with: revoking one ends them (issue 14 part 5).

A guard checks a token once per request, but an event stream is one request that may last for
days. So every stream holds on to its principal's grants (``viewer:<token id>``,
``session:<sid hash>``) while it is open. Revoking a viewer token, logging a session out, or the
credential's expiry ends each stream that holds it, with a last ``revoked`` event saying why;
reconnecting then gets 401.

With several instances, a revocation is also published (ephemeral) on ``exec:revoked``; every
instance listens and ends its own streams of that grant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from shared.backends import BackendUnavailable
from shared.encoding import encode_json
from shared.hub import Hub

from .auth import Principal

__all__ = ["REVOKED_TOPIC", "Grants", "Hold"]

log = logging.getLogger(__name__)

REVOKED_TOPIC = "exec:revoked"

_DETAIL = {
    "revoked": "the viewer token this stream was opened with was revoked",
    "expired": "the token or session this stream was opened with has expired",
    "logged out": "the session this stream was opened with was logged out",
}


class Hold:
    """One open stream's hold on its grants: ``reason`` is set once it must end."""

    __slots__ = ("_grants", "_timer", "_wakes", "grants", "reason")

    def __init__(self, owner: Grants, grants: tuple[str, ...]) -> None:
        self._grants = owner
        self.grants = grants
        self.reason: str | None = None
        self._wakes: list[Callable[[], None]] = []
        self._timer: asyncio.TimerHandle | None = None

    def on_end(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` when the stream must end (at once if it must already)."""
        self._wakes.append(wake)
        if self.reason is not None:
            wake()

    def end(self, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        if self._timer is not None:
            self._timer.cancel()
        for wake in self._wakes:
            wake()

    def farewell(self) -> bytes:
        """The stream's last event: ``revoked`` with the reason (``revoked``, ``expired``, ``logged out``)."""
        reason = self.reason or "revoked"
        return encode_json({"reason": reason, "detail": _DETAIL.get(reason, reason)}, event="revoked")

    def release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._grants.release(self)


class Grants:
    """The open streams of this instance, by grant."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._holds: dict[str, set[Hold]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def hold(self, principal: Principal) -> Hold:
        """Register a stream of ``principal``; ``release()`` it when the stream ends."""
        hold = Hold(self, principal.grants)
        for grant in principal.grants:
            self._holds.setdefault(grant, set()).add(hold)
        if principal.expires_at is not None:
            delay = principal.expires_at - time.time()
            if delay <= 0:
                hold.end("expired")
            else:
                hold._timer = asyncio.get_running_loop().call_later(delay, hold.end, "expired")
        return hold

    def release(self, hold: Hold) -> None:
        for grant in hold.grants:
            holds = self._holds.get(grant)
            if holds is not None:
                holds.discard(hold)
                if not holds:
                    del self._holds[grant]

    def end(self, grant: str, reason: str) -> int:
        """End this instance's streams of ``grant``; returns how many."""
        holds = list(self._holds.get(grant, ()))
        for hold in holds:
            hold.end(reason)
        return len(holds)

    async def revoke(self, grant: str, reason: str) -> None:
        """End the streams of ``grant`` here and (several instances) everywhere."""
        self.end(grant, reason)
        if not self.hub.backend.spans_processes:
            return
        try:
            message = json.dumps({"grant": grant, "reason": reason})
            await self.hub.backend.append(REVOKED_TOPIC, message, "revoked", ephemeral=True)
        except BackendUnavailable as exc:
            # The credential is gone from the shared store already: new requests get 401
            # everywhere; only other instances' open streams of it go on until they reconnect.
            log.warning("could not tell the other instances that %s ended: %s", grant, exc)

    async def start(self) -> None:
        if self.hub.backend.spans_processes and self._task is None:
            self._closed = False
            self._task = asyncio.create_task(self._listen(), name="exec-grants")

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: redis-py can swallow a cancel that lands while it connects.
            await asyncio.wait([task], timeout=2.0)

    async def _listen(self) -> None:
        while not self._closed:
            try:
                async for batch in self.hub.backend.listen(REVOKED_TOPIC, None):
                    for entry in batch:
                        with contextlib.suppress(ValueError, TypeError, KeyError):
                            message = json.loads(entry.data)
                            self.end(str(message["grant"]), str(message["reason"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening for revocations failed (%s); retrying", exc)
            if not self._closed:
                await asyncio.sleep(0.5)
