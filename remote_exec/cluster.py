"""Several instances on one backend (issue 7): whose run is it, and what do we know about it.

A run lives on the instance that started it: its process, its pty, its log file. Its id names
that instance (``<instance>.<12 hex digits>``), so any instance knows where to route input,
signals and resizes (``shared.routing.Router``) without a registry. What every instance can
read about any run comes from the backend: the run's events (``mirror.run_topic``) and its row
as published when it started and ended (``mirror.state_topic``).

With the memory backend there is no cluster: ids are 12 hex digits and everything is local.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import psutil

from shared.backends.base import UnknownEventId
from shared.hub import Hub
from shared.routing import Router, new_instance_id

from .mirror import RunMirror, state_topic
from .store import FINAL, RUNNING, RunRow

__all__ = ["UNREACHABLE", "Cluster"]

# The status shown for a run whose owner is gone without saying how the run ended (it crashed,
# or has not restarted yet to mark the run lost).
UNREACHABLE = "unreachable"


class Cluster:
    """This instance's view of the others: run ownership, routing, shared run state."""

    def __init__(self, hub: Hub, *, instance: str | None = None, beat: float = 2.0, timeout: float = 10.0) -> None:
        self.hub = hub
        self.instance = instance or new_instance_id()
        self.router = Router(hub, "exec", instance=self.instance, meta={"pid": os.getpid()}, beat=beat, timeout=timeout)

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
        host, _, rest = owner.rpartition("-")[0].rpartition("-")
        if host != socket.gethostname()[:32] or not rest.isdigit():
            return False
        try:
            proc = psutil.Process(int(rest))
            return bool(proc.create_time() > row.started_at + 1 or proc.status() == psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return True

    # -- what every instance knows ----------------------------------------------------------------

    def describe(self, row: dict[str, Any]) -> dict[str, Any]:
        """A run's public row with where it runs: ``instance``, ``here``, and ``unreachable``
        status for a run still "running" on an instance that is gone."""
        owner = self.owner_of(str(row.get("id", "")))
        out = dict(row, instance=owner, here=owner == self.instance)
        if out.get("status") == RUNNING and owner is not None and owner != self.instance and not self.alive(owner):
            out["status"] = UNREACHABLE
            out["detail"] = f"the instance running it ({owner}) is not reachable: it stopped or crashed"
        return out

    async def publish_state(self, row: dict[str, Any]) -> None:
        await self.hub.publish_json(state_topic(str(row["id"])), row, event="run")

    async def state(self, run_id: str) -> dict[str, Any] | None:
        """The run's row as last published, ``None`` if the backend never heard of it."""
        try:
            entries = await self.hub.backend.read_after(state_topic(run_id), "0-0", 100)
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
