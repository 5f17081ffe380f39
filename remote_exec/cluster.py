"""Several instances on one backend (issue 7): whose run is it, and what do we know about it.

A run lives on the instance that started it: its process, its pty, its log file. Its id names
that instance (``<instance>.<12 hex digits>``), so any instance knows where to route input,
signals and resizes (``shared.routing.Router``) without a registry. What every instance can
read about any run comes from the backend: the run's events (``mirror.run_topic``), its row as
published when it started and ended (``mirror.state_topic``), and the run index
(``run_index.py``), which lists every instance's runs.

When an owner dies without a word (``kill -9``, a crash, a hang; issue 13 part 4):

1. the routers forget it after three missed beats: its running runs show ``unreachable`` at
   once, and the streams watching them get an ``unreachable`` event (``reachable`` if it comes back);
2. it is known to be gone when its process is (an instance on this host: its pid), or when it
   has been silent for ``lost_after`` seconds (its liveness key expired in Redis). Then one
   instance (a claim in Redis) declares its running runs ``lost``: it publishes their ``exit``
   (``status: "lost"``), which ends every stream of them, and their row.
3. an owner that was only silent (a hang, a network split) and finds on its next beat that its
   runs were declared lost ends them, so that "lost" stays true.

With the memory backend there is no cluster: ids are 12 hex digits and everything is local.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

from shared.backends.base import BackendUnavailable, UnknownEventId
from shared.encoding import encode_json
from shared.hub import Hub
from shared.routing import Router, new_instance_id

from .mirror import RunMirror, run_topic, state_topic
from .run_index import RunIndex
from .store import FINAL, RUNNING, RunRow

__all__ = ["LOST", "UNREACHABLE", "Cluster", "OwnerWatch"]

log = logging.getLogger(__name__)

# The status shown for a run whose owner is gone without saying how the run ended (it crashed,
# or hangs), until it is known to be lost.
UNREACHABLE = "unreachable"
LOST = "lost"


def _host_pid(instance: str) -> tuple[str, int] | None:
    """The host and pid an instance id (``<host>-<pid>-<random>``) names, if it has them."""
    host, _, rest = instance.rpartition("-")[0].rpartition("-")
    return (host, int(rest)) if host and rest.isdigit() else None


def process_gone(instance: str, since: float) -> bool | None:
    """Whether the process of ``instance`` (on this host) is gone, or is another process now
    (started after ``since``); ``None`` for an instance of another host: not ours to judge."""
    found = _host_pid(instance)
    if found is None or found[0] != socket.gethostname()[:32]:
        return None
    try:
        proc = psutil.Process(found[1])
        return bool(proc.create_time() > since + 1 or proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True


class Cluster:
    """This instance's view of the others: run ownership, routing, shared run state."""

    def __init__(
        self,
        hub: Hub,
        index: RunIndex,
        *,
        instance: str | None = None,
        beat: float = 2.0,
        timeout: float = 10.0,
        lost_after: float = 30.0,
    ) -> None:
        self.hub = hub
        self.index = index
        self.instance = instance or new_instance_id()
        self.beat = beat
        self.lost_after = max(lost_after, 4 * beat)
        self.router = Router(hub, "exec", instance=self.instance, meta={"pid": os.getpid()}, beat=beat, timeout=timeout)
        self.router.on_change.append(self._peer_changed)
        # Streams of other instances' runs, woken when an instance goes or comes back.
        self.watchers: set[Callable[[], None]] = set()
        # Set by the app: tell the run list (``exec:runs``) about a row; end this instance's
        # live runs (they were declared lost while it was silent).
        self.announce: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.end_local_runs: Callable[[str], Awaitable[None]] | None = None
        self._started_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[None] | None = None
        self._closed = False

    # -- ownership ------------------------------------------------------------------------------

    @property
    def id_prefix(self) -> str:
        return f"{self.instance}."

    @staticmethod
    def owner_of(run_id: str) -> str | None:
        """The instance a run id names, ``None`` for an id of a single-instance server."""
        owner, dot, _ = run_id.rpartition(".")
        return owner if dot and owner else None

    def alive(self, instance: str) -> bool:
        return instance in self.router.peers()

    def mirror(self, run_id: str) -> RunMirror:
        return RunMirror(self.hub, run_id)

    def is_orphan(self, row: RunRow) -> bool:
        """Whether a run left "running" in this data dir lost its server: an instance on this host
        whose process is gone (or is another process now). Runs of other hosts are not ours to judge."""
        owner = self.owner_of(row.id)
        if owner is None:
            return True
        return bool(process_gone(owner, row.started_at))

    # -- what every instance knows ----------------------------------------------------------------

    def describe(self, row: dict[str, Any]) -> dict[str, Any]:
        """A run's public row with where it runs: ``instance``, ``here``, and ``unreachable``
        status for a run still "running" on an instance that is gone."""
        owner = self.owner_of(str(row.get("id", "")))
        out = dict(row, instance=owner, here=owner == self.instance)
        if out.get("status") == RUNNING and owner is not None and owner != self.instance and not self.alive(owner):
            out["status"] = UNREACHABLE
            out["detail"] = unreachable_detail(owner)
        return out

    async def publish_state(self, row: dict[str, Any]) -> None:
        await self.hub.publish_json(state_topic(str(row["id"])), row, event="run")
        await self.index.put(row)

    async def state(self, run_id: str) -> dict[str, Any] | None:
        """The run's row as last published, ``None`` if the backend never heard of it."""
        try:
            topic = state_topic(run_id)
            entries = await self.hub.backend.read_after(topic, await self.hub.backend.origin_id(topic), 100)
        except UnknownEventId:
            return None
        for entry in reversed(entries):
            try:
                row = json.loads(entry.data)
            except ValueError:
                continue
            if isinstance(row, dict):
                return row
        return None

    @staticmethod
    def ended(row: dict[str, Any]) -> bool:
        return row.get("status") in FINAL

    # -- owners that go away ------------------------------------------------------------------------

    def _peer_changed(self, instance: str, alive: bool) -> None:
        for wake in list(self.watchers):
            wake()
        if not alive and not self._closed:
            self._sweep_soon()

    def _sweep_soon(self) -> None:
        if self._sweeping is None or self._sweeping.done():
            self._sweeping = asyncio.ensure_future(self._sweep_safely())

    async def _sweep_safely(self) -> None:
        try:
            await self.sweep()
        except BackendUnavailable as exc:
            log.info("exec cluster: cannot check other instances' runs yet: %s", exc)
        except Exception:
            log.exception("exec cluster: checking other instances' runs failed")

    async def sweep(self) -> None:
        """Tell everyone about the running runs of instances that are gone: ``unreachable``
        first, then (once that is known) ``lost``, each by one instance."""
        if time.monotonic() - self._started_at < 3.5 * self.beat:
            return  # not heard from every live instance yet: nobody is judged gone before that
        by_owner: dict[str, list[dict[str, Any]]] = {}
        for row in await self.index.running():
            owner = self.owner_of(str(row.get("id", "")))
            if owner is not None and owner != self.instance and not self.alive(owner):
                by_owner.setdefault(owner, []).append(row)
        for owner, rows in by_owner.items():
            since = min(float(r.get("started_at", 0)) for r in rows)
            gone = process_gone(owner, since)
            if gone is None:
                gone = not await self.index.beating(owner)
            if gone:
                if await self.index.claim(LOST, owner, 86400.0):
                    for row in rows:
                        await self.declare_lost(row, owner)
            elif await self.index.claim(UNREACHABLE, owner, self.lost_after):
                for row in rows:
                    if self.announce is not None:
                        await self.announce(self.describe(row))

    async def declare_lost(self, row: dict[str, Any], owner: str) -> None:
        """End a run of a dead instance for everyone: its ``exit`` (lost), its row, the list."""
        reason = (
            f"the instance running it ({owner}) stopped answering while it ran (killed, crashed or cut off); "
            "what it printed after that is not recorded"
        )
        exit_info = {"status": LOST, "code": None, "signal": None, "duration_s": None, "dropped_bytes": 0,
                     "reason": reason}  # fmt: skip
        await self.hub.publish_json(run_topic(str(row["id"])), exit_info, event="exit")
        ended = dict(row, status=LOST, ended_at=time.time(), detail=reason)
        ended.pop("instance", None)
        ended.pop("here", None)
        await self.publish_state(ended)
        log.warning("run %s declared lost: %s", row["id"], reason)
        if self.announce is not None:
            await self.announce(self.describe(ended))

    async def _beats(self) -> None:
        while not self._closed:
            try:
                declared = await self.index.beat(self.instance, self.lost_after)
                if declared and self.end_local_runs is not None:
                    # We were silent so long that another instance told everyone our runs were
                    # lost: end them, so that what the viewers were told stays true.
                    log.warning(
                        "exec instance %s was declared gone while it was silent; ending its runs", self.instance
                    )
                    await self.end_local_runs("this instance was unreachable and its runs were declared lost")
                    await self.index.forget_claim(LOST, self.instance)
                await self.sweep()
            except BackendUnavailable as exc:
                log.info("exec cluster: %s", exc)
            except Exception:
                log.exception("exec cluster: a beat failed")
            await asyncio.sleep(self.beat)

    # -- lifetime ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False
        self._started_at = time.monotonic()
        with contextlib.suppress(BackendUnavailable):
            await self.index.beat(self.instance, self.lost_after)
        await self.router.start()
        self._task = asyncio.create_task(self._beats(), name="exec-cluster-beat")

    async def close(self) -> None:
        """Leave: stop beating (a graceful stop has ended its runs and said so already)."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._task, self._sweeping) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        if not self.hub.closing:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.index.leave(self.instance), 1.0)
        await self.router.close()


def unreachable_detail(owner: str) -> str:
    return f"the instance running it ({owner}) is not reachable: it stopped or crashed"


class OwnerWatch:
    """A stream's watch on the owner of the run it shows: ``unreachable`` when the owner goes,
    ``reachable`` if it comes back."""

    def __init__(self, cluster: Cluster, owner: str) -> None:
        self.cluster = cluster
        self.owner = owner
        self.shown = cluster.alive(owner)

    def moved(self) -> bool:
        return self.cluster.alive(self.owner) != self.shown

    def event(self) -> bytes:
        """The event for the owner's state now (and remember it as shown)."""
        self.shown = self.cluster.alive(self.owner)
        if self.shown:
            return encode_json({"instance": self.owner, "text": f"instance {self.owner} is reachable again"},
                               event="reachable")  # fmt: skip
        detail = unreachable_detail(self.owner)
        return encode_json({"instance": self.owner, "text": detail, "detail": detail}, event=UNREACHABLE)
