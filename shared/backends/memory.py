"""In-process backend: each topic is a bounded deque. The default; needs nothing installed."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from .base import Backend, Entry, UnknownEventId

__all__ = ["MemoryBackend"]

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_epoch() -> str:
    """Six random base-36 characters. Ids carry it so ids from another run are told apart."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(6))


@dataclass(slots=True, eq=False)
class _Listener:
    pending: list[Entry] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    deliver: Callable[[list[Entry]], None] | None = None  # a follower (see MemoryBackend.follow)


@dataclass(slots=True)
class _Topic:
    seq: int = 0
    # (seq, monotonic time, entry), oldest first
    log: deque[tuple[int, float, Entry]] = field(default_factory=deque)
    listeners: set[_Listener] = field(default_factory=set)


class MemoryBackend(Backend):
    """Keeps the last ``max_events`` events of each topic, none older than ``max_age`` seconds."""

    def __init__(self, *, max_events: int = 10_000, max_age: float = 3600.0, epoch: str | None = None) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self.max_age = max_age
        self.epoch = epoch or new_epoch()
        self._topics: dict[str, _Topic] = {}
        self._closed = False

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic()
        return topic

    def _forget_if_unused(self, name: str, topic: _Topic) -> None:
        # A topic that never stored an event (only ephemeral ones, as /bidi/'s rpc:<client id>)
        # and that nobody listens to holds nothing; kept, it would cost ~1.7 KiB per client id
        # forever. A topic with stored events stays: its seq numbers the next id.
        if topic.seq == 0 and not topic.listeners and self._topics.get(name) is topic:
            del self._topics[name]

    def _evict(self, topic: _Topic, now: float) -> None:
        log = topic.log
        while len(log) > self.max_events:
            log.popleft()
        cutoff = now - self.max_age
        while log and log[0][1] < cutoff:
            log.popleft()

    async def append(self, topic: str, data: str, event: str | None = None, *, ephemeral: bool = False) -> Entry:
        t = self._topic(topic)
        if ephemeral:
            entry = Entry(None, event, data)
        else:
            t.seq += 1
            entry = Entry(f"{self.epoch}-{t.seq}", event, data)
            now = time.monotonic()
            t.log.append((t.seq, now, entry))
            self._evict(t, now)
        # A copy: a follower's deliver() may stop following (and so change the set).
        for listener in tuple(t.listeners):
            if listener.deliver is not None:
                listener.deliver([entry])
            else:
                listener.pending.append(entry)
                listener.wake.set()
        self._forget_if_unused(topic, t)
        return entry

    def order_key(self, event_id: str) -> tuple[int, ...]:
        epoch, sep, seq = event_id.partition("-")
        if not sep or epoch != self.epoch or not seq.isdigit():
            raise ValueError(f"not an id of this server run: {event_id[:80]!r}")
        return (int(seq),)

    async def read_after(self, topic: str, event_id: str, limit: int) -> list[Entry]:
        return self._read_after(topic, event_id, limit)

    def _read_after(self, topic: str, event_id: str, limit: int) -> list[Entry]:
        try:
            (seq,) = self.order_key(event_id)
        except ValueError:
            epoch, sep, rest = event_id.partition("-")
            foreign = bool(sep) and rest.isdigit() and len(epoch) == len(self.epoch)
            raise UnknownEventId(event_id, "foreign" if foreign else "unknown") from None
        t = self._topics.get(topic) or _Topic()  # reading creates nothing
        self._evict(t, time.monotonic())
        if seq > t.seq:
            raise UnknownEventId(event_id, "unknown")
        # Resuming right after the oldest kept event is fine; before it, events are gone.
        oldest = t.log[0][0] if t.log else t.seq + 1
        if seq < oldest - 1:
            raise UnknownEventId(event_id, "evicted")
        out = [entry for s, _, entry in t.log if s > seq]
        return out[:limit]

    async def latest_id(self, topic: str) -> str | None:
        t = self._topics.get(topic)
        if t is None or t.seq == 0:
            return None
        return f"{self.epoch}-{t.seq}"

    async def origin_id(self, topic: str) -> str:
        return f"{self.epoch}-0"  # seq 0: before the first event (ids start at 1)

    async def listen(self, topic: str, after: str | None) -> AsyncIterator[list[Entry]]:
        t = self._topic(topic)
        listener = _Listener()
        t.listeners.add(listener)
        try:
            if after is not None:
                backlog = self._read_after(topic, after, self.max_events)
            else:
                backlog = [entry for _, _, entry in t.log]
            if backlog:
                yield backlog
            while not self._closed:
                await listener.wake.wait()
                listener.wake.clear()
                batch, listener.pending = listener.pending, []
                if batch:
                    yield batch
        finally:
            t.listeners.discard(listener)
            self._forget_if_unused(topic, t)

    def follow(self, topic: str, after: str | None, deliver: Callable[[list[Entry]], None]) -> Callable[[], None]:
        """:meth:`listen` by callback: ``deliver(batch)`` runs inside :meth:`append`, before it
        returns, first with what was stored after ``after``. Returns the function that stops it.

        What the hub uses for this backend: an event reaches the subscribers' shared log in the
        publisher's own step, without a reader task woken per topic and per event.
        """
        backlog = self._read_after(topic, after, self.max_events) if after is not None else None
        t = self._topic(topic)
        if backlog is None:
            backlog = [entry for _, _, entry in t.log]
        listener = _Listener(deliver=deliver)
        t.listeners.add(listener)

        def stop() -> None:
            t.listeners.discard(listener)
            self._forget_if_unused(topic, t)

        if backlog:
            deliver(backlog)
        return stop

    async def start(self) -> None:
        # Startable again after close: tests use one backend across "server restarts" to stand in
        # for a durable store.
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        for t in self._topics.values():
            for listener in t.listeners:
                listener.wake.set()
