"""A run's log, mirrored to the backend so that every instance can serve it (issue 7).

With a shared backend (Redis), the owner of a run appends every frame of its log to the file as
before *and* hands it to a :class:`RunMirror`, which publishes it as a stored event on the run's
topic (``exec:run:<id>``). Any instance then serves the run's stream from that topic through its
hub, so the SSE id is the backend's id and a viewer can resume on any instance.

The file stays the owner's complete copy (``/output``, recovery after a crash); the topic keeps
what the backend's retention keeps (``maxlen`` events per topic).

Publishing is asynchronous and strictly in order: one task per run drains a queue, merging
consecutive output frames of one kind (up to 64 KiB) into one event, so a chatty program makes a
few large events while Redis is slow rather than thousands of small ones. The queue is bounded
by the policy's output cap, like the log. While the backend is unavailable the task retries with
backoff; at the end of the run it has a few seconds to catch up, then what is left is dropped
(and logged): the owner's log file still has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque

from shared.backends.base import BackendUnavailable
from shared.hub import Hub

from .runlog import EVENT_NAMES, MERGE_LIMIT, RAW_KINDS, event_data

__all__ = ["RunMirror", "run_topic", "state_topic"]

log = logging.getLogger(__name__)

FINISH_TIMEOUT_S = 10.0
_RETRY_MIN, _RETRY_MAX = 0.05, 2.0


def run_topic(run_id: str) -> str:
    """The topic of a run's events (output, input, notices, exit), one stored event per frame."""
    return f"exec:run:{run_id}"


def state_topic(run_id: str) -> str:
    """A run's row, published when it starts and when it ends (a handful of events)."""
    return f"exec:run-state:{run_id}"


class RunMirror:
    """Publishes one run's frames, in order, to its topic. ``put`` is synchronous (it is called
    from the log's append); ``finish`` waits for the queue to drain."""

    def __init__(self, hub: Hub, run_id: str) -> None:
        self.hub = hub
        self.topic = run_topic(run_id)
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._wake = asyncio.Event()
        self._finishing = False
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.dropped = 0

    async def open(self, run: dict[str, object]) -> None:
        """Publish the first event (the run itself), so the topic exists before anyone asks for
        it; raises ``BackendUnavailable`` (the run is not started then)."""
        await self.hub.publish(self.topic, json.dumps({"run": run}, separators=(",", ":")), event="run")
        self._task = asyncio.create_task(self._pump(), name=f"exec-mirror:{self.topic}")

    def put(self, kind: bytes, payload: bytes) -> None:
        self._queue.append((kind, payload))
        self._wake.set()

    async def finish(self, timeout: float = FINISH_TIMEOUT_S) -> None:
        """Publish what is queued (the exit frame last), within ``timeout`` seconds."""
        self._finishing = True
        self._wake.set()
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.dropped += len(self._queue)
            log.warning("%s: backend unavailable; %d frames not published", self.topic, len(self._queue))
            self._queue.clear()

    def _take(self) -> tuple[bytes, bytes]:
        kind, payload = self._queue.popleft()
        if kind not in RAW_KINDS:
            return kind, payload
        parts = [payload]
        size = len(payload)
        while self._queue and self._queue[0][0] == kind and size + len(self._queue[0][1]) <= MERGE_LIMIT:
            part = self._queue.popleft()[1]
            parts.append(part)
            size += len(part)
        return kind, b"".join(parts) if len(parts) > 1 else payload

    async def _pump(self) -> None:
        while True:
            if not self._queue:
                if self._finishing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            kind, payload = self._take()
            delay = _RETRY_MIN
            while True:
                try:
                    await self.hub.publish(self.topic, event_data(kind, payload), event=EVENT_NAMES[kind])
                    break
                except BackendUnavailable as exc:
                    log.info("%s: cannot publish yet (%s); retrying", self.topic, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RETRY_MAX)
            self.published += 1
