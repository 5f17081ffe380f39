"""The topic hub: ids, replay from Last-Event-ID, fan-out with one shared log per topic.

Per topic and per process there is one reader task that takes new entries from the backend,
encodes each one **once**, and appends the bytes to a shared in-memory log. A subscriber is a
cursor into that log: when the log grows it takes everything past its cursor in one write. A
subscriber that falls off the log's tail (it stopped reading) is ended; it resumes by
Last-Event-ID like any other reconnecting client. Publishers never wait for subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .backends.base import Backend, Entry, UnknownEventId
from .backends.memory import MemoryBackend
from .encoding import encode, encode_comment, encode_json
from .limits import ConnectionLimiter, WriteWatchdog

__all__ = ["Hub", "HubSettings", "Subscription"]

log = logging.getLogger(__name__)

_HEARTBEAT = encode_comment("ping")


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Tuning knobs. ``window`` bounds how far a subscriber may lag before it is ended."""

    window: int = 4096
    window_age: float = 300.0
    heartbeat: float = 15.0
    replay_limit: int = 10_000
    # Sent with the final event at shutdown: reconnect soon, the server is restarting.
    shutdown_retry_ms: int = 1000
    # A client that stops reading never lags in the log: its stream waits in the server's flow
    # control for socket buffers that never drain. One write not done in this many seconds ends
    # the stream and drops the connection (see shared.limits). None: wait forever.
    write_timeout: float | None = 30.0
    # Open streams per client address (one more gets 429 + Retry-After); None for no limit.
    # Loopback clients are exempt unless limit_loopback (see shared.limits.ConnectionLimiter).
    max_streams_per_client: int | None = 32
    limit_loopback: bool = False


class _Topic:
    """The shared log of one topic in this process, and the reader that fills it."""

    __slots__ = (
        "_joined",
        "base",
        "chunks",
        "closed",
        "ids",
        "index",
        "keys",
        "last_append",
        "name",
        "reader",
        "subscribers",
        "times",
        "waiter",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.chunks: list[bytes] = []
        self.ids: list[str | None] = []
        self.keys: list[tuple[int, ...] | None] = []
        self.times: list[float] = []
        self.base = 0  # absolute position of chunks[0]
        self.index: dict[str, int] = {}  # event id -> absolute position
        self.waiter: asyncio.Future[None] | None = None
        self.subscribers = 0
        self.reader: asyncio.Task[None] | None = None
        self.closed = False
        self.last_append = time.monotonic()
        self._joined: tuple[int, int, bytes, str | None] = (0, 0, b"", None)

    def joined(self, start: int, end: int) -> tuple[bytes, str | None]:
        """Entries ``start..end`` (absolute positions) as one bytes object, and the last id in them."""
        c_start, c_end, data, last_id = self._joined
        if c_start == start and c_end == end:
            return data, last_id
        lo, hi = start - self.base, end - self.base
        data = self.chunks[lo] if hi - lo == 1 else b"".join(self.chunks[lo:hi])
        last_id = None
        for i in range(hi - 1, lo - 1, -1):
            if self.ids[i] is not None:
                last_id = self.ids[i]
                break
        self._joined = (start, end, data, last_id)
        return data, last_id

    @property
    def end(self) -> int:
        return self.base + len(self.chunks)

    def append(self, chunk: bytes, event_id: str | None, key: tuple[int, ...] | None, window: int) -> None:
        now = time.monotonic()
        self.chunks.append(chunk)
        self.ids.append(event_id)
        self.keys.append(key)
        self.times.append(now)
        if event_id is not None:
            self.index[event_id] = self.end - 1
        self.last_append = now
        # Keep up to 2x the window physically, then drop the oldest half at once (amortised O(1)).
        if len(self.chunks) > 2 * window:
            drop = len(self.chunks) - window
            for old in self.ids[:drop]:
                if old is not None:
                    self.index.pop(old, None)
            del self.chunks[:drop], self.ids[:drop], self.keys[:drop], self.times[:drop]
            self.base += drop

    def wake(self) -> None:
        if self.waiter is not None:
            if not self.waiter.done():
                self.waiter.set_result(None)
            self.waiter = None

    async def wait(self) -> None:
        if self.waiter is None:
            self.waiter = asyncio.get_running_loop().create_future()
        # Shielded: a subscriber being cancelled (client gone) must not cancel everyone's wait.
        await asyncio.shield(self.waiter)

    def window_start(self, window: int, max_age: float) -> int:
        start = max(self.base, self.end - window)
        cutoff = time.monotonic() - max_age
        times = self.times
        i = start - self.base
        while i < len(times) and times[i] < cutoff:
            i += 1
        return self.base + i


class Subscription:
    """Iterate for ``bytes``: each item is every event pending for this subscriber, joined."""

    def __init__(
        self,
        hub: Hub,
        topic: _Topic,
        cursor: int,
        prelude: list[bytes],
        after_key: tuple[int, ...] | None,
        last_id: str | None,
    ) -> None:
        self._hub = hub
        self._topic = topic
        self.cursor = cursor
        self._live_from = cursor  # ephemeral entries before this are old news
        self._prelude = prelude
        self._after_key = after_key
        self.last_id = last_id
        self.ended_reason: str | None = None
        self._closed = False

    def close(self, reason: str = "closed") -> None:
        """End this subscription from outside (e.g. another connection took over its client id)."""
        if not self._closed:
            self._closed = True
            self.ended_reason = reason
            self._topic.wake()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        if self._prelude:
            chunk = b"".join(self._prelude)
            self._prelude = []
            yield chunk
        topic = self._topic
        settings = self._hub.settings
        while not self._closed:
            if self.cursor >= topic.end:
                if topic.closed:
                    self.ended_reason = "shutdown"
                    return
                await topic.wait()
                continue
            if self.cursor < topic.window_start(settings.window, settings.window_age):
                # Too slow: the events it has not read are no longer in the shared log.
                self.ended_reason = "slow"
                log.info("ending slow subscriber on %r (last id %r)", topic.name, self.last_id)
                return
            start = self.cursor
            lo, hi = start - topic.base, topic.end - topic.base
            self.cursor = topic.end
            if self._after_key is None and start >= self._live_from:
                # The common case: everything from the cursor on is for us, and subscribers at the
                # same cursor share one joined bytes object (one join per wake-up, not per subscriber).
                chunk, last_id = topic.joined(start, topic.end)
                if last_id is not None:
                    self.last_id = last_id
                yield chunk
                continue
            out: list[bytes] = []
            after_key = self._after_key
            for i in range(lo, hi):
                event_id = topic.ids[i]
                if event_id is None:
                    if topic.base + i < self._live_from:
                        continue  # heartbeats and ephemeral events are not replayed
                else:
                    key = topic.keys[i]
                    if after_key is not None and key is not None:
                        if key <= after_key:
                            continue  # already sent from the backend's history
                        self._after_key = after_key = None
                    self.last_id = event_id
                out.append(topic.chunks[i])
            if out:
                yield b"".join(out)


class Hub:
    """Topics with ids, replay and fan-out. Use as ``async with Hub() as hub:`` or start/close.

    ``limiter`` caps open streams per client address (pass one to share the cap between hubs);
    by default each hub makes its own from the settings.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        settings: HubSettings | None = None,
        *,
        limiter: ConnectionLimiter | None = None,
    ) -> None:
        self.backend = backend or MemoryBackend()
        self.settings = s = settings or HubSettings()
        self.limiter = limiter or ConnectionLimiter(s.max_streams_per_client, limit_loopback=s.limit_loopback)
        self.watchdog = WriteWatchdog(s.write_timeout)
        self._topics: dict[str, _Topic] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._started = False
        self.closing = False

    # -- lifetime -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.backend.start()
        self._ticker = asyncio.create_task(self._heartbeats(), name="sse-heartbeat")
        self.watchdog.start()

    async def close(self) -> None:
        """End every open stream (each gets a final ``shutdown`` event) and stop the readers."""
        if self.closing:
            return
        self.closing = True
        for topic in list(self._topics.values()):
            topic.closed = True
            topic.wake()
        # Let the streams write their last bytes before the readers and backend go away.
        await asyncio.sleep(0)
        tasks = [t.reader for t in self._topics.values() if t.reader is not None]
        if self._ticker is not None:
            tasks.append(self._ticker)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.watchdog.stop()
        await self.backend.close()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, topic: str, data: str, event: str | None = None, *, ephemeral: bool = False) -> str | None:
        """Store and broadcast an event; returns its id (``None`` for ephemeral events)."""
        entry = await self.backend.append(topic, data, event, ephemeral=ephemeral)
        return entry.id

    async def publish_json(
        self, topic: str, obj: Any, event: str | None = None, *, ephemeral: bool = False
    ) -> str | None:
        return await self.publish(
            topic, json.dumps(obj, separators=(",", ":"), ensure_ascii=False), event, ephemeral=ephemeral
        )

    # -- subscribing ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(self, topic: str, last_event_id: str | None = None) -> AsyncIterator[Subscription]:
        """Events after ``last_event_id`` (or from now), then live ones; no gap, no duplicate.

        An id that cannot be resumed from yields one ``reset`` event first (data: reason and the
        latest id), so the client knows to reload instead of silently missing events.
        """
        if self.closing:
            raise RuntimeError("the hub is shut down; no new subscriptions")
        if not self._started:
            raise RuntimeError("the hub is not started: call `await hub.start()` (or use `async with Hub()`)")
        t = await self._attach(topic)
        try:
            cursor = t.end
            prelude: list[bytes] = []
            after_key: tuple[int, ...] | None = None
            last_id: str | None = None
            if last_event_id:
                pos = t.index.get(last_event_id)
                if pos is not None and pos >= t.window_start(self.settings.window, self.settings.window_age):
                    cursor, last_id = pos + 1, last_event_id
                else:
                    prelude, after_key, last_id = await self._history(topic, last_event_id)
            sub = Subscription(self, t, cursor, prelude, after_key, last_id)
            yield sub
        finally:
            self._detach(t)

    async def _history(self, topic: str, last_event_id: str) -> tuple[list[bytes], tuple[int, ...] | None, str | None]:
        try:
            entries = await self.backend.read_after(topic, last_event_id, self.settings.replay_limit)
        except UnknownEventId as exc:
            latest = await self.backend.latest_id(topic)
            reset = encode_json({"reason": exc.reason, "latest_id": latest}, event="reset", id=latest)
            key = self.backend.order_key(latest) if latest else None
            return [reset], key, latest
        key = self.backend.order_key(entries[-1].id if entries and entries[-1].id else last_event_id)
        last = entries[-1].id if entries else last_event_id
        return [_encode_entry(e) for e in entries], key, last

    async def _attach(self, name: str) -> _Topic:
        t = self._topics.get(name)
        if t is None:
            t = self._topics[name] = _Topic(name)
            t.subscribers += 1
            try:
                after = await self.backend.latest_id(name)
            except BaseException:
                self._detach(t)
                raise
            t.reader = asyncio.create_task(self._read(t, after), name=f"sse-reader:{name}")
        else:
            t.subscribers += 1
        return t

    def _detach(self, t: _Topic) -> None:
        t.subscribers -= 1
        if t.subscribers == 0 and self._topics.get(t.name) is t:
            # Nobody listens here any more: stop reading; the backend still has the events.
            del self._topics[t.name]
            if t.reader is not None:
                t.reader.cancel()

    async def _read(self, t: _Topic, after: str | None) -> None:
        backend, window = self.backend, self.settings.window
        for _ in range(100):  # bounded: a backend that keeps losing events gets its streams ended
            try:
                async for batch in backend.listen(t.name, after):
                    for entry in batch:
                        key = backend.order_key(entry.id) if entry.id is not None else None
                        t.append(_encode_entry(entry), entry.id, key, window)
                        if entry.id is not None:
                            after = entry.id
                    t.wake()
                return
            except asyncio.CancelledError:
                raise
            except UnknownEventId as exc:
                # The backend lost events this process had not read yet (Redis trimmed them while
                # it was unreachable): every subscriber gets one reset, then live events.
                log.warning("topic %r: events after %r are gone (%s); sending reset", t.name, exc.event_id, exc.reason)
                try:
                    after = await backend.latest_id(t.name)
                except Exception:
                    break
                reset = encode_json({"reason": exc.reason, "latest_id": after}, event="reset", id=after)
                t.append(reset, after, backend.order_key(after) if after else None, window)
                t.wake()
            except Exception:
                log.exception("reader for topic %r failed; ending its streams so clients resume", t.name)
                break
        # Its streams end (clients resume by Last-Event-ID); the next subscriber starts a new reader.
        if self._topics.get(t.name) is t:
            del self._topics[t.name]
        t.closed = True
        t.wake()

    async def _heartbeats(self) -> None:
        interval = self.settings.heartbeat
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for t in self._topics.values():
                if now - t.last_append >= interval * 0.9:
                    t.append(_HEARTBEAT, None, None, self.settings.window)
                    t.wake()

    # -- introspection ----------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {"topics": len(self._topics), "subscribers": sum(t.subscribers for t in self._topics.values())}

    def shutdown_event(self, last_id: str | None) -> bytes:
        """The last event a stream sends when the server stops: reconnect soon, from here."""
        return encode(
            json.dumps({"reason": "server shutting down"}),
            event="shutdown",
            id=last_id,
            retry=self.settings.shutdown_retry_ms,
        )


def _encode_entry(entry: Entry) -> bytes:
    return encode(entry.data, event=entry.event, id=entry.id)
