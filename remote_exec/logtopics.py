"""Run topics served from the runs' log files, for the hub of a single instance.

``exec:run:<id>`` is read from the run's log (``runlog.py``): the event id of a frame is
``o<offset>`` (the byte just after it), so resuming is a seek and ``o0`` is the start. Every other
topic (the run list, revocations) goes to the wrapped backend. The hub then serves run output as
it serves every stream: one reader per topic (here a callback on the run's pulse, no task), the
events encoded once for all viewers, resume by Last-Event-ID, ``reset`` when an id is not one of
the run's frame boundaries, and the stream's end at the run's ``exit`` event (``until="exit"``).

History is read a few events at a time (``replay_page``): a late joiner to a run with megabytes
of output holds one page, not the whole log. Several instances share run output through the
backend instead (``mirror.py``), with the same stream code.
"""

from __future__ import annotations

import json
import os
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, ClassVar

from shared.backends.base import Backend, Entry, UnknownEventId

from .runlog import EVENT_NAMES, MERGE_LIMIT, RAW_KINDS, Frame, RunLog, event_data, parse_event_id

if TYPE_CHECKING:
    from .runner import Runner

__all__ = ["RUN_TOPIC_PREFIX", "RunLogBackend"]

RUN_TOPIC_PREFIX = "exec:run:"
READ_BYTES = 1 << 18
# 8 events of at most 64 KiB (merged output) per page of a resume: at most 512 KiB per stream.
PAGE = 8
_BOUNDARY_CACHE = 64  # finished logs whose frame ends are kept (they no longer change)
_NO_EXIT = json.dumps(
    {"status": "unknown", "code": None, "signal": None, "duration_s": None, "dropped_bytes": 0,
     "reason": "the log of this run ends without its exit record (it could not be written)"}
)  # fmt: skip


def _events(frames: list[Frame]) -> list[Entry]:
    """Entries for ``frames``: runs of same-kind output frames become one (as ``encode_frames``)."""
    out: list[Entry] = []
    i, n = 0, len(frames)
    while i < n:
        f = frames[i]
        j = i + 1
        payload = f.payload
        if f.kind in RAW_KINDS:
            size = len(payload)
            while j < n and frames[j].kind == f.kind and size + len(frames[j].payload) <= MERGE_LIMIT:
                size += len(frames[j].payload)
                j += 1
            if j > i + 1:
                payload = b"".join(x.payload for x in frames[i:j])
        out.append(Entry(frames[j - 1].event_id, EVENT_NAMES[f.kind], event_data(f.kind, payload)))
        i = j
    return out


class _Follower:
    """The hub's reader of one run topic: on each pulse of the live run, the frames appended
    since, delivered inside the runner's append (no task, no polling)."""

    def __init__(self, backend: RunLogBackend, run_id: str, pos: int, deliver: Callable[[list[Entry]], None]) -> None:
        self.backend = backend
        self.run_id = run_id
        self.pos = pos
        self.deliver = deliver
        self.reader = RunLog(backend.runner.log_path(run_id))
        self.done = False
        self.live = backend.runner.live.get(run_id)
        if self.live is not None:
            self.live.pulse.listeners.append(self.pulse)

    def pulse(self) -> None:
        if self.done:
            return
        self.reader.refresh()
        batch: list[Entry] = []
        while True:
            frames = self.reader.read(self.pos, READ_BYTES)
            if not frames:
                break
            self.pos = frames[-1].end
            batch += _events(frames)
        if batch and batch[-1].event == "exit":
            self.done = True
        elif self.live is None or self.backend.runner.live.get(self.run_id) is not self.live:
            # The runner is done with it (the exit, if any, was written before this pulse).
            self.done = True
            if not self.reader.ends_with_exit():
                # Nothing more will come, and no exit (it could not be written): end the streams anyway.
                batch.append(Entry(None, "exit", _NO_EXIT))
        if batch:
            self.deliver(batch)

    def stop(self) -> None:
        self.done = True
        if self.live is not None:
            try:
                self.live.pulse.listeners.remove(self.pulse)
            except ValueError:
                pass
        self.reader.close()


class RunLogBackend(Backend):
    """``inner`` for every topic but the runs' own, which are read from their log files."""

    replay_page: ClassVar[int | None] = PAGE

    def __init__(self, inner: Backend, runner: Runner) -> None:
        self.inner = inner
        self.runner = runner
        self._followers: dict[str, list[Callable[[list[Entry]], None]]] = {}
        self._ends: OrderedDict[str, array[int]] = OrderedDict()

    def _run_id(self, topic: str) -> str | None:
        return topic[len(RUN_TOPIC_PREFIX) :] if topic.startswith(RUN_TOPIC_PREFIX) else None

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self.inner.ping()

    def describe(self) -> str:
        return self.inner.describe()

    async def append(self, topic: str, data: str, event: str | None = None, *, ephemeral: bool = False) -> Entry:
        run_id = self._run_id(topic)
        if run_id is None:
            return await self.inner.append(topic, data, event, ephemeral=ephemeral)
        if not ephemeral:
            raise ValueError(f"{topic}: a run's stored events are the frames of its log, written by the runner")
        entry = Entry(None, event, data)  # e.g. the number of viewers: to the open streams only
        for deliver in list(self._followers.get(topic, ())):
            deliver([entry])
        return entry

    def _boundary(self, run_id: str, pos: int) -> bool:
        live = self.runner.live.get(run_id)
        if live is not None:
            return live.log.is_boundary(pos)  # its frame ends are kept as it writes them
        ends = self._ends.get(run_id)
        if ends is None:
            with RunLog(self.runner.log_path(run_id)) as reader:
                ends = reader._scan()  # once per finished log, not once per page
            self._ends[run_id] = ends
            if len(self._ends) > _BOUNDARY_CACHE:
                self._ends.popitem(last=False)
        else:
            self._ends.move_to_end(run_id)
        return pos == 0 or (len(ends) > 0 and pos <= ends[-1] and _contains(ends, pos))

    async def read_after(self, topic: str, event_id: str, limit: int) -> list[Entry]:
        run_id = self._run_id(topic)
        if run_id is None:
            return await self.inner.read_after(topic, event_id, limit)
        pos = parse_event_id(event_id)
        if pos is None or not self.runner.log_path(run_id).exists():
            raise UnknownEventId(event_id, "unknown")
        if not self._boundary(run_id, pos):
            raise UnknownEventId(event_id, "unknown")
        if limit <= 0:
            return []
        out: list[Entry] = []
        with RunLog(self.runner.log_path(run_id)) as reader:
            while len(out) <= limit:
                frames = reader.read(pos, READ_BYTES)
                if not frames:
                    break
                pos = frames[-1].end
                out += _events(frames)
            at_end = pos >= reader.size
        if len(out) > limit:
            # Cut at an event boundary that is a frame boundary (each entry's id is one).
            out = out[:limit]
        elif at_end and run_id not in self.runner.live and not _ends_with_exit(self.runner, run_id, out):
            out.append(Entry(None, "exit", _NO_EXIT))  # the run is over, its log has no exit
        return out

    async def latest_id(self, topic: str) -> str | None:
        run_id = self._run_id(topic)
        if run_id is None:
            return await self.inner.latest_id(topic)
        try:
            size = os.stat(self.runner.log_path(run_id)).st_size
        except FileNotFoundError:
            return None
        return f"o{size}" if size else None

    async def origin_id(self, topic: str) -> str:
        if self._run_id(topic) is None:
            return await self.inner.origin_id(topic)
        return "o0"

    def order_key(self, event_id: str) -> tuple[int, ...]:
        pos = parse_event_id(event_id)
        return (pos,) if pos is not None else self.inner.order_key(event_id)

    def follow(
        self, topic: str, after: str | None, deliver: Callable[[list[Entry]], None]
    ) -> Callable[[], None] | None:
        run_id = self._run_id(topic)
        if run_id is None:
            return self.inner.follow(topic, after, deliver)
        follower = _Follower(self, run_id, parse_event_id(after or "o0") or 0, deliver)
        delivers = self._followers.setdefault(topic, [])
        delivers.append(deliver)
        follower.pulse()  # what came after ``after``, or the end of a finished run

        def stop() -> None:
            follower.stop()
            if deliver in delivers:
                delivers.remove(deliver)
            if not delivers and self._followers.get(topic) is delivers:
                del self._followers[topic]

        return stop

    async def listen(self, topic: str, after: str | None) -> AsyncIterator[list[Entry]]:
        if self._run_id(topic) is None:
            async for batch in self.inner.listen(topic, after):
                yield batch
            return
        raise NotImplementedError("run topics are followed (follow()), not listened to")


def _contains(ends: array[int], pos: int) -> bool:
    i = bisect_left(ends, pos)
    return i < len(ends) and ends[i] == pos


def _ends_with_exit(runner: Runner, run_id: str, out: list[Entry]) -> bool:
    if out:
        return out[-1].event == "exit"
    with RunLog(runner.log_path(run_id)) as reader:
        return reader.ends_with_exit()
