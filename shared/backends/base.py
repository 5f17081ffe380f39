"""The seam between the hub and where events are kept.

A backend stores each topic's events in order, hands out their ids, answers "what came after
id X", and streams what gets appended. The hub does everything per-subscriber (encoding once,
cursors, heartbeats) on top, so a backend never sees individual SSE connections.
"""

from __future__ import annotations

import bisect
import contextlib
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

__all__ = ["LATENCY_BUCKETS", "Backend", "BackendUnavailable", "Entry", "OpStats", "ResetReason", "UnknownEventId"]

# "epoch": the store lost its history (a Redis restarted without persistence, FLUSHALL, a failover
# to an empty replica) and started a new one; what a client holds belongs to the old one.
ResetReason = Literal["unknown", "evicted", "foreign", "epoch"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One event as stored. ``id`` is ``None`` for ephemeral events, which are never stored."""

    id: str | None
    event: str | None
    data: str


class UnknownEventId(LookupError):
    """A Last-Event-ID the backend cannot resume from; the client must reload (a ``reset``)."""

    def __init__(self, event_id: str, reason: ResetReason) -> None:
        super().__init__(f"cannot resume after event id {event_id[:80]!r}: {reason}")
        self.event_id = event_id
        self.reason: ResetReason = reason


# Upper bounds (seconds) of the latency buckets a backend counts its calls in (see OpStats).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class OpStats:
    """Calls to a backend that goes over the network: count, errors and a latency histogram per
    operation, as plain numbers (exported by ``shared.metrics`` at a scrape)."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()  # (op, "ok" | "error")
        self.buckets: dict[str, list[int]] = {}  # op -> count per bucket (not cumulative), +Inf last
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, op: str) -> Iterator[None]:
        began = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        except UnknownEventId:
            outcome = "ok"  # an answer ("cannot resume from there"), not a failure
            raise
        finally:
            took = time.perf_counter() - began
            self.calls[(op, outcome)] += 1
            self.seconds[op] = self.seconds.get(op, 0.0) + took
            counts = self.buckets.get(op)
            if counts is None:
                counts = self.buckets[op] = [0] * (len(LATENCY_BUCKETS) + 1)
            counts[bisect.bisect_left(LATENCY_BUCKETS, took)] += 1


class BackendUnavailable(ConnectionError):
    """The backend cannot take a publish right now; callers answer 503 and the client retries."""


class Backend(ABC):
    """Where topics live. Implementations: ``memory://`` (default) and ``redis://``."""

    # Whether other processes can see this backend's topics (Redis: yes; in-process ones: no).
    # With False, an app knows it is the only instance and needs no election or routing.
    spans_processes: ClassVar[bool] = False
    # Events per page of a resume's history, if this backend wants pages smaller than the hub's
    # ``replay_limit`` (events that are large: a run's output, up to 64 KiB each).
    replay_page: ClassVar[int | None] = None

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; pending ``listen`` iterators end."""

    @abstractmethod
    async def append(self, topic: str, data: str, event: str | None = None, *, ephemeral: bool = False) -> Entry:
        """Append an event (or just broadcast it, if ephemeral) and return it with its id."""

    @abstractmethod
    async def read_after(self, topic: str, event_id: str, limit: int) -> list[Entry]:
        """Stored events after ``event_id``, oldest first; raise ``UnknownEventId`` if it cannot."""

    @abstractmethod
    async def latest_id(self, topic: str) -> str | None:
        """The id of the newest stored event of ``topic``, ``None`` if it has none."""

    async def ping(self) -> None:  # noqa: B027 - in-process backends are always there
        """Raise ``BackendUnavailable`` if the backend cannot be reached now (``/readyz``)."""

    def describe(self) -> str:
        """A short name for health reports: ``memory``, ``redis at host:port``."""
        return type(self).__name__.removesuffix("Backend").lower()

    @abstractmethod
    async def origin_id(self, topic: str) -> str:
        """The id just before this history's first event of ``topic``: resuming from it replays
        everything still kept (or raises ``UnknownEventId("evicted")`` once the oldest events are
        gone). A ``reset`` on a topic with no events carries it, so a browser that got one never
        keeps sending an id from an older history (issue 16)."""

    @abstractmethod
    def listen(self, topic: str, after: str | None) -> AsyncIterator[list[Entry]]:
        """Batches of entries stored after ``after`` (all kept ones if ``None``), then new ones as
        they are appended, ephemeral ones included. The hub passes ``latest_id()`` read just before,
        so nothing appended in between is missed."""

    def follow(
        self, topic: str, after: str | None, deliver: Callable[[list[Entry]], None]
    ) -> Callable[[], None] | None:
        """:meth:`listen` by callback, for a backend that can: ``deliver(batch)`` runs inside
        :meth:`append`, before it returns (first with what is stored after ``after``). Returns the
        function that stops it, or ``None`` if this backend cannot (the default): then the hub
        reads :meth:`listen` in a task, one hop more per event."""
        return None

    @abstractmethod
    def order_key(self, event_id: str) -> tuple[int, ...]:
        """A sort key for an id of this backend; ``ValueError`` if the id is not one of ours."""
