"""The topic hub: ids, replay from Last-Event-ID, fan-out with one shared log per topic.

Per topic and per process there is one reader task that takes new entries from the backend
(or, where the backend offers it, a callback inside its append(): no task, no hop), encodes
each one **once**, and appends the bytes to a shared in-memory log. A subscriber is a cursor
into that log: when the log grows it takes everything past its cursor in one write. A
subscriber that falls off the log's tail (it stopped reading) is ended; it resumes by
Last-Event-ID like any other reconnecting client. Publishers never wait for subscribers.

A topic may have an end: ``subscribe(topic, until="exit")`` ends the subscription right after the
first event of that name (a run's ``exit``), whether it came from the history or live.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .backends.base import Backend, Entry, UnknownEventId
from .backends.memory import MemoryBackend
from .encoding import compact_json, encode, encode_comment, encode_json
from .fastpath import DIRECT_HOLD, Direct, flush
from .limits import ConnectionLimiter, WriteWatchdog

__all__ = ["Hub", "HubSettings", "Subscription"]

log = logging.getLogger(__name__)

_HEARTBEAT = encode_comment("ping")
# Subscribers woken per turn of the event loop in a fan-out round (see _Topic._wake_some).
WAKE_SLICE = 16
# A round whose subscribers have not all run after this long (never seen: a safety net) no
# longer holds the next one back.
_STUCK_ROUND = 1.0


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Tuning knobs. ``window`` bounds how far a subscriber may lag before it is ended."""

    window: int = 4096
    window_age: float = 300.0
    heartbeat: float = 15.0
    # Events read from the backend per page of a resume's history (a resume further behind reads
    # page after page as the client takes them, so it never holds more than one page).
    replay_limit: int = 10_000
    # Sent with the final event at shutdown: reconnect soon, the server is restarting. Each
    # stream gets its own hint, spread evenly over [min, max]: every client of an instance that
    # drains comes back within a second, and not all in the same few milliseconds (with a fixed
    # hint and the clients' own 25 % jitter, thousands would land on the other instances inside
    # 250 ms, and the last of them waited for the crowd ahead: tests/product/test_rolling_restart.py).
    shutdown_retry_ms: int = 1000
    shutdown_retry_min_ms: int = 100
    # A client that stops reading never lags in the log: its stream waits in the server's flow
    # control for socket buffers that never drain. One write not done in this many seconds ends
    # the stream and drops the connection (see shared.limits). None: wait forever.
    write_timeout: float | None = 30.0
    # Open streams per client address (one more gets 429 + Retry-After); None for no limit.
    # Loopback clients are exempt unless limit_loopback (see shared.limits.ConnectionLimiter).
    max_streams_per_client: int | None = 32
    limit_loopback: bool = False


def topic_class(topic: str) -> str:
    """A topic's kind for metrics: the part before its first ``:`` (``room``, ``exec``, ``rpc``...).
    Never the whole name: that would be a label per room, run or client."""
    return topic.partition(":")[0][:32]


@dataclass(slots=True)
class HubCounts:
    """What the hub did, as plain counters (read by ``shared.metrics`` at a scrape; nothing on the
    hot path but an integer add per write)."""

    published: Counter[tuple[str, str]] = field(default_factory=Counter)  # (topic class, kind)
    delivered: Counter[str] = field(default_factory=Counter)  # topic class -> entries written, of ended topics
    resets: Counter[str] = field(default_factory=Counter)  # reason
    ended_slow: int = 0


class _Topic:
    """The shared log of one topic in this process, and the reader that fills it."""

    __slots__ = (
        "_joined",
        "base",
        "chunks",
        "closed",
        "cls",
        "delivered",
        "direct",
        "direct_again",
        "direct_began",
        "direct_quiet",
        "direct_state",
        "final",
        "ids",
        "index",
        "keys",
        "last_append",
        "loop",
        "name",
        "quiet_until",
        "reader",
        "round",
        "round_began",
        "round_left",
        "round_wall",
        "subscribers",
        "timer",
        "times",
        "unfollow",
        "until",
        "waiters",
        "wake_pending",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.cls = topic_class(name)
        self.delivered = 0  # entries written to its subscribers (folded into HubCounts when it ends)
        # Kept: asyncio.get_running_loop() makes a getpid() system call each time (CPython 3.11
        # checks for a fork), once per subscriber and event it was 6% of the server's CPU.
        self.loop = asyncio.get_running_loop()
        self.chunks: list[bytes] = []
        self.ids: list[str | None] = []
        self.keys: list[tuple[int, ...] | None] = []
        self.times: list[float] = []
        self.base = 0  # absolute position of chunks[0]
        self.index: dict[str, int] = {}  # event id -> absolute position
        # One future per waiting subscriber (a dict: ordered, O(1) removal of a cancelled one).
        # Cheaper than one shared future, which every waiter would have to wrap in
        # asyncio.shield (a future and two callbacks each) so that a subscriber being cancelled
        # does not cancel everyone's wait; and a single subscriber can be woken alone (close()).
        self.waiters: dict[asyncio.Future[None], None] = {}
        # Streams parked for direct writes (shared.fastpath): written in one loop per wake-up,
        # no coroutine woken. direct_state: 0 idle, 1 a pass is scheduled, 2 one is running
        # (sliced over turns); direct_again: the log grew during that pass, run another after it.
        self.direct: dict[Direct, None] = {}
        self.direct_state = 0
        self.direct_again = False
        self.direct_began = 0.0  # thread CPU time when the running pass began
        self.direct_quiet = 0.0  # no pass starts before this (monotonic): see direct_done()
        # The last fan-out round: the waiters it woke, how many have not run yet, when it began.
        # A new round starts no sooner than the last one took (see wake()).
        self.round: dict[asyncio.Future[None], None] = {}
        self.round_left = 0
        self.round_began = 0.0  # thread CPU time
        self.round_wall = 0.0
        self.wake_pending = False
        self.quiet_until = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.subscribers = 0
        self.reader: asyncio.Task[None] | None = None
        self.unfollow: Callable[[], None] | None = None  # instead of a reader (Backend.follow)
        self.closed = False
        # The name of the event that ends this topic (subscribe's ``until``), and the absolute
        # position of the first such event once it is in the log.
        self.until: str | None = None
        self.final: int | None = None
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

    def append(
        self, chunk: bytes, event_id: str | None, key: tuple[int, ...] | None, window: int, event: str | None = None
    ) -> None:
        now = time.monotonic()
        if event is not None and event == self.until and self.final is None:
            self.final = self.end
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
        """Start a fan-out round: every waiting subscriber takes what is new, in one write each.

        Adaptive batching: a round starts no sooner after the last one ended than that one took
        (in CPU time), so rounds take at most about half of the loop's time.
        A round costs about the same whether each subscriber writes one event or twenty, so when
        events come faster than rounds can go (1,000 subscribers at 100 events/s), they wait
        for the next round together instead of each costing a round of its own (which would
        leave the loop no time for anything else, publishers included, and let the backlog
        grow). When rounds are short next to the gaps between events, nothing waits.

        Streams parked for direct writes are not in rounds: one pass on the next turn of the loop
        writes to all of them (a burst's events published in this turn go out together).
        """
        if self.direct:
            self._schedule_direct()
        waiters = self.waiters
        if not waiters:
            return
        now = time.monotonic()
        if not self.closed:
            if self.round_left > 0 and now - self.round_wall < _STUCK_ROUND:
                # A round is still going: its subscribers that have not run yet will take this
                # too; the others wait for the next round, which the end of this one starts.
                self.wake_pending = True
                return
            if now < self.quiet_until:
                if self.timer is None:
                    self.timer = self.loop.call_later(self.quiet_until - now, self._timer_wake)
                return
        self.waiters = {}
        self.round, self.round_left = waiters, len(waiters)
        self.round_began, self.round_wall = time.thread_time(), now
        self._wake_some(iter(list(waiters)))

    def _wake_some(self, waiters: Iterator[asyncio.Future[None]]) -> None:
        # A slice per turn of the loop: the event loop sends what a turn wrote only when the turn
        # ends, so the first subscribers' bytes leave while the others are still being served,
        # instead of every byte waiting for the whole round.
        for n, waiter in enumerate(waiters, 1):
            if not waiter.done():
                waiter.set_result(None)
            if n == WAKE_SLICE:
                self.loop.call_soon(self._wake_some, waiters)
                return

    def _schedule_direct(self) -> None:
        if self.direct_state == 0:
            self.direct_state = 1
            wait = self.direct_quiet - time.monotonic()
            if wait > 0:
                self.loop.call_later(wait, self._direct_pass)
            else:
                self.loop.call_soon(self._direct_pass)
        elif self.direct_state == 2:
            self.direct_again = True

    def _direct_pass(self) -> None:
        # The parked streams as of now (not when scheduled): one that parked since is written too.
        self.direct_state = 2
        self.direct_began = time.thread_time()
        flush(self, list(self.direct), 0)

    def direct_done(self) -> None:
        """The direct pass has been through every stream it began with.

        A pass costs a write per stream whether each carries one event or twenty. The next one
        waits a quarter of this one's CPU time: an event that comes to an idle topic leaves at
        once, while events that come faster than passes go wait a little and leave together
        (without it, at 1,000 events/s to 1,000 streams the publisher got one event in per pass
        and fell behind: 7.1 s to publish 5 s of events, p50 0.2-0.9 s and growing).
        """
        self.direct_state = 0
        self.direct_quiet = time.monotonic() + DIRECT_HOLD * (time.thread_time() - self.direct_began)
        if self.direct_again:
            self.direct_again = False
            if self.direct:
                self._schedule_direct()

    def _timer_wake(self) -> None:
        self.timer = None
        self.wake()

    def woken(self, waiters: dict[asyncio.Future[None], None]) -> None:
        """A subscriber woken by the round of ``waiters`` runs; the last one ends the round."""
        if waiters is self.round:
            self.round_left -= 1
            if self.round_left <= 0:
                # CPU time of the loop's thread, not wall time: a server that other processes
                # keep off the CPU for a while would otherwise hold the next round back that long.
                self.quiet_until = time.monotonic() + (time.thread_time() - self.round_began)
                self.round = {}
                if self.wake_pending:
                    self.wake_pending = False
                    self.wake()

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def in_window(self, pos: int, window: int, max_age: float) -> bool:
        """Whether ``pos`` (before ``end``) is still within the window: :meth:`window_start` in O(1),
        as the times only grow."""
        i = pos - self.base
        return i >= 0 and pos >= self.end - window and self.times[i] >= time.monotonic() - max_age

    def window_start(self, window: int, max_age: float) -> int:
        start = max(self.base, self.end - window)
        cutoff = time.monotonic() - max_age
        times = self.times
        i = start - self.base
        while i < len(times) and times[i] < cutoff:
            i += 1
        return self.base + i


class Subscription:
    """Iterate for ``bytes``: each item is every event pending for this subscriber, joined.

    A server loop can use :meth:`take` and :meth:`wait` instead of iterating: no async generator
    per chunk, which matters when one event wakes thousands of subscribers.
    """

    __slots__ = (
        "_after_key",
        "_closed",
        "_ends",
        "_hub",
        "_live_from",
        "_more",
        "_prelude",
        "_prelude_ends",
        "_topic",
        "_waiter",
        "cursor",
        "ended_reason",
        "last_id",
    )

    def __init__(
        self,
        hub: Hub,
        topic: _Topic,
        cursor: int,
        prelude: list[bytes],
        after_key: tuple[int, ...] | None,
        last_id: str | None,
        live_from: int,
        until: str | None = None,
    ) -> None:
        self._hub = hub
        self._topic = topic
        self.cursor = cursor
        # Ephemeral entries before this position (the log's end when the subscription began)
        # are old news: a resume from the shared log replays only stored events.
        self._live_from = live_from
        self._prelude = prelude
        self._after_key = after_key
        self.last_id = last_id
        self.ended_reason: str | None = None
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._ends = topic.until is not None and topic.until == until
        # The history is read a page at a time: the id to read the next page after, if any.
        self._more: str | None = None
        self._prelude_ends = False  # the prelude holds the topic's final event: end after it

    def close(self, reason: str = "closed") -> None:
        """End this subscription from outside (e.g. another connection took over its client id)."""
        if not self._closed:
            self._closed = True
            self.ended_reason = reason
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def push(self, chunk: bytes) -> None:
        """Send ``chunk`` to this subscriber alone, before the topic's next events (a notice that
        concerns only this stream, such as the state of the instance it depends on)."""
        self._prelude.append(chunk)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            chunk = self.take()
            if chunk is None:
                return
            if chunk:
                yield chunk
            else:
                await self.wait()

    async def wait(self) -> None:
        """Until :meth:`take` may have something: new events, or the end of this subscription."""
        if self._more is not None:
            await self._hub._next_page(self)
            return
        topic = self._topic
        if self._closed or topic.closed or self.cursor < topic.end or self._prelude:
            return
        waiter = topic.loop.create_future()
        waiters = topic.waiters
        waiters[waiter] = None
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None
            # Cancelled (the client went away): forget the future. After a wake, this pops from
            # the topic's previous dict, which is gone anyway.
            waiters.pop(waiter, None)
            topic.woken(waiters)

    async def park(self, direct: Direct) -> None:
        """As :meth:`wait`, but while nothing is pending the topic writes this stream's events
        into its socket itself (``shared.fastpath``), until it hands it back: then :meth:`take`
        has what the ASGI path must do (an end, a pushed notice), or the socket is behind."""
        if self._more is not None:
            await self._hub._next_page(self)
            return
        topic = self._topic
        if not self._hub.direct_writes:
            await self.wait()
            return
        if self._closed or topic.closed or self.cursor < topic.end or self._prelude:
            return
        waiter = topic.loop.create_future()
        direct.sub, direct.waiter = self, waiter
        self._waiter = waiter
        parked = topic.direct
        parked[direct] = None
        try:
            await waiter
        finally:
            self._waiter = direct.waiter = None
            parked.pop(direct, None)

    def take(self) -> bytes | None:
        """Everything pending for this subscriber as one ``bytes``, the cursor moved past it.

        ``b""`` when nothing is pending (then ``await wait()``); ``None`` once the subscription
        has ended (``ended_reason`` says why: ``"shutdown"``, ``"slow"``, ``"end"`` after the
        topic's final event, or what close() was given).
        """
        if self._prelude:
            chunk = b"".join(self._prelude)
            self._prelude = []
            if self._prelude_ends:
                self._finish("end")
            return chunk
        if self._closed:
            return None
        if self._more is not None:
            if self._topic.closed:  # the server stops (or the topic's source failed) mid-history
                self._finish("shutdown")
                return None
            return b""  # the next page of the history: wait() reads it
        topic = self._topic
        if self.cursor >= topic.end:
            if topic.closed:
                self.ended_reason = "shutdown"
                self._closed = True
                return None
            return b""
        settings = self._hub.settings
        if not topic.in_window(self.cursor, settings.window, settings.window_age):
            # Too slow: the events it has not read are no longer in the shared log.
            self.ended_reason = "slow"
            self._closed = True
            self._hub.counts.ended_slow += 1
            log.info("ending slow subscriber on %r (last id %r)", topic.name, self.last_id)
            return None
        start = self.cursor
        end = topic.end
        final = topic.final
        if final is not None and self._ends and final >= start:
            end = final + 1  # up to the topic's final event, then this subscription ends
            self._finish("end")
        lo, hi = start - topic.base, end - topic.base
        self.cursor = end
        topic.delivered += hi - lo
        if self._after_key is None and start >= self._live_from:
            # The common case: everything from the cursor on is for us, and subscribers at the
            # same cursor share one joined bytes object (one join per wake-up, not per subscriber).
            chunk, last_id = topic.joined(start, end)
            if last_id is not None:
                self.last_id = last_id
            return chunk
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
        return b"".join(out)

    def _turn(self, page: _Page) -> None:
        """Take ``page`` of the history as what comes next."""
        self._prelude.extend(page.chunks)
        self._after_key = page.key
        self.last_id = page.last_id
        self._more = page.last_id if page.more else None
        self._prelude_ends = page.ends

    def _finish(self, reason: str) -> None:
        self._closed = True
        self.ended_reason = reason


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
        # Direct writes (shared.fastpath) only where append() hands events over itself: behind a
        # reader task (Redis, SQLite) they measured slower than woken streams (issue 20: at 1,000
        # events/s p50 46-226 ms against 27-29, a burst 0.68-0.83x).
        self.direct_writes = type(self.backend).follow is not Backend.follow
        self.settings = s = settings or HubSettings()
        self.limiter = limiter or ConnectionLimiter(s.max_streams_per_client, limit_loopback=s.limit_loopback)
        self.watchdog = WriteWatchdog(s.write_timeout)
        self._topics: dict[str, _Topic] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._started = False
        self.closing = False
        self.counts = HubCounts()
        # Set when the server starts to stop with a drain period (shared.health): new streams
        # are refused with 503 (a load balancer sends them elsewhere), open ones carry on until
        # close() ends them.
        self.draining = False
        # Run once at the start of close(), before the streams end: an app that must publish
        # last events first (remote_exec ending its runs, so their exits reach every viewer).
        self.before_close: list[Callable[[], Awaitable[None]]] = []

    @property
    def accepting(self) -> bool:
        """Whether a new stream may open here (not draining, not shut down)."""
        return not (self.closing or self.draining)

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
        hooks, self.before_close = self.before_close, []
        for hook in hooks:
            await hook()
        self.closing = True
        for topic in list(self._topics.values()):
            topic.closed = True
            topic.wake()
        # Let the streams write their last bytes before the readers and backend go away.
        await asyncio.sleep(0)
        for topic in self._topics.values():
            topic.stop_timer()
            if topic.unfollow is not None:
                topic.unfollow()
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
        self.counts.published[(topic_class(topic), "ephemeral" if ephemeral else "stored")] += 1
        return entry.id

    async def publish_json(
        self, topic: str, obj: Any, event: str | None = None, *, ephemeral: bool = False
    ) -> str | None:
        return await self.publish(topic, compact_json(obj), event, ephemeral=ephemeral)

    # -- subscribing ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(
        self, topic: str, last_event_id: str | None = None, *, until: str | None = None
    ) -> AsyncIterator[Subscription]:
        """Events after ``last_event_id`` (or from now), then live ones; no gap, no duplicate.

        An id that cannot be resumed from yields one ``reset`` event first (data: reason and the
        latest id), so the client knows to reload instead of silently missing events.

        ``until``: the name of the event that ends the topic (a run's ``exit``). The subscription
        ends (``ended_reason == "end"``) right after delivering the first one, and at once if it
        starts past it. Every subscriber of a topic that passes ``until`` passes the same name.
        """
        if self.closing:
            raise RuntimeError("the hub is shut down; no new subscriptions")
        if not self._started:
            raise RuntimeError("the hub is not started: call `await hub.start()` (or use `async with Hub()`)")
        t = await self._attach(topic, until)
        try:
            cursor = t.end
            page: _Page | None = None
            last_id: str | None = None
            if last_event_id:
                pos = t.index.get(last_event_id)
                if pos is not None and pos >= t.window_start(self.settings.window, self.settings.window_age):
                    cursor, last_id = pos + 1, last_event_id
                else:
                    page = await self._history(topic, last_event_id, until)
            # Live from the log's end now, not from the resume cursor: while other subscribers keep
            # the topic's log, the ephemeral events between the cursor and now (a typing
            # indicator, a metrics frame from seconds ago) are in it too, and must not be replayed.
            sub = Subscription(self, t, cursor, [], None, last_id, t.end, until)
            if page is not None:
                sub._turn(page)
            elif sub._ends and t.final is not None and cursor > t.final:
                sub._finish("end")  # it starts past the topic's end: nothing more will come
            yield sub
        finally:
            self._detach(t)

    async def _history(self, topic: str, last_event_id: str, until: str | None) -> _Page:
        backend = self.backend
        limit = min(self.settings.replay_limit, backend.replay_page or self.settings.replay_limit)
        try:
            entries = await backend.read_after(topic, last_event_id, limit)
        except UnknownEventId as exc:
            self.counts.resets[exc.reason] += 1
            latest = await backend.latest_id(topic)
            # An id to resume from even when the topic has none yet (its origin): without one a
            # browser keeps the unresumable id and gets this reset on every reconnect.
            resume = latest or await backend.origin_id(topic)
            reset = encode_json({"reason": exc.reason, "latest_id": latest}, event="reset", id=resume)
            return _Page([reset], backend.order_key(resume), resume, more=False, ends=False)
        full = len(entries) >= limit
        ends = False
        if until is not None:
            for i, entry in enumerate(entries):
                if entry.event == until:
                    entries, ends = entries[: i + 1], True
                    break
        last = last_event_id
        for entry in reversed(entries):
            if entry.id is not None:
                last = entry.id
                break
        chunks = [_encode_entry(e) for e in entries]
        return _Page(chunks, backend.order_key(last), last, more=full and not ends, ends=ends)

    async def _next_page(self, sub: Subscription) -> None:
        """The next page of ``sub``'s history (it took the last one)."""
        after = sub._more
        assert after is not None
        until = sub._topic.until if sub._ends else None
        sub._turn(await self._history(sub._topic.name, after, until))

    async def _attach(self, name: str, until: str | None = None) -> _Topic:
        t = self._topics.get(name)
        if t is not None and until is not None and t.until != until:
            raise ValueError(f"topic {name!r} is open with until={t.until!r}; every subscriber passes the same")
        if t is None:
            t = self._topics[name] = _Topic(name)
            t.until = until
            t.subscribers += 1
            try:
                after = await self.backend.latest_id(name)
                # Where the backend can hand each event over inside append(): no reader task.
                t.unfollow = self.backend.follow(name, after, functools.partial(self._deliver, t))
            except BaseException:
                self._detach(t)
                raise
            if t.unfollow is None:
                t.reader = asyncio.create_task(self._read(t, after), name=f"sse-reader:{name}")
        else:
            t.subscribers += 1
        return t

    def _detach(self, t: _Topic) -> None:
        t.subscribers -= 1
        if t.subscribers == 0 and self._topics.get(t.name) is t:
            # Nobody listens here any more: stop reading; the backend still has the events.
            del self._topics[t.name]
            self._fold(t)
            t.stop_timer()
            if t.reader is not None:
                t.reader.cancel()
            if t.unfollow is not None:
                t.unfollow()

    def _deliver(self, t: _Topic, batch: list[Entry]) -> None:
        """Append entries to a topic's shared log and wake its subscribers (a follower's callback)."""
        backend, window = self.backend, self.settings.window
        try:
            for entry in batch:
                key = backend.order_key(entry.id) if entry.id is not None else None
                t.append(_encode_entry(entry), entry.id, key, window, entry.event)
        except Exception:
            log.exception("topic %r: an event could not be encoded; ending its streams so clients resume", t.name)
            self._end_topic(t)
        t.wake()

    def _end_topic(self, t: _Topic) -> None:
        """End every stream of ``t`` (clients resume by Last-Event-ID); the next subscriber starts
        it again."""
        if self._topics.get(t.name) is t:
            del self._topics[t.name]
        self._fold(t)
        if t.unfollow is not None:
            t.unfollow()
        t.stop_timer()
        t.closed = True
        t.wake()

    async def _read(self, t: _Topic, after: str | None) -> None:
        backend, window = self.backend, self.settings.window
        for _ in range(100):  # bounded: a backend that keeps losing events gets its streams ended
            try:
                async for batch in backend.listen(t.name, after):
                    for entry in batch:
                        key = backend.order_key(entry.id) if entry.id is not None else None
                        t.append(_encode_entry(entry), entry.id, key, window, entry.event)
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
                self.counts.resets[exc.reason] += 1
                try:
                    after = await backend.latest_id(t.name)
                except Exception:
                    break
                if exc.reason == "epoch":
                    # The backend's history was lost and begun again (issue 13.3): the ids in this
                    # log belong to the old one, so a client resuming from one must get a reset
                    # from the backend, not a replay from here.
                    t.index.clear()
                resume = after or await backend.origin_id(t.name)
                reset = encode_json({"reason": exc.reason, "latest_id": after}, event="reset", id=resume)
                # No order key: every live subscriber gets it, whatever its cursor (an epoch's
                # new ids may sort below the old ones).
                t.append(reset, resume, backend.order_key(after) if after else None, window)
                t.wake()
            except Exception:
                log.exception("reader for topic %r failed; ending its streams so clients resume", t.name)
                break
        # Its streams end (clients resume by Last-Event-ID); the next subscriber starts a new reader.
        self._end_topic(t)

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

    def _fold(self, t: _Topic) -> None:
        # Its subscribers may still write what they took; counted up to now, and on from zero.
        self.counts.delivered[t.cls] += t.delivered
        t.delivered = 0

    def live_counts(self) -> tuple[Counter[str], Counter[str]]:
        """(open streams, entries delivered) per topic class, live topics included."""
        streams: Counter[str] = Counter()
        delivered = Counter(self.counts.delivered)
        for t in self._topics.values():
            streams[t.cls] += t.subscribers
            delivered[t.cls] += t.delivered
        return streams, delivered

    def stats(self) -> dict[str, int]:
        return {"topics": len(self._topics), "subscribers": sum(t.subscribers for t in self._topics.values())}

    def direct_streams(self) -> int:
        """Streams parked now for direct writes (``shared.fastpath``): idle, each written by its
        topic straight into its socket."""
        return sum(len(t.direct) for t in self._topics.values())

    def shutdown_event(self, last_id: str | None) -> bytes:
        """The last event of a stream whose topic ended: when the server stops, or when the
        topic's event source failed (then the next subscriber starts it again). Either way:
        reconnect soon, from here."""
        reason = "server shutting down" if self.closing else "event source failed; reconnect to resume"
        low, high = self.settings.shutdown_retry_min_ms, self.settings.shutdown_retry_ms
        return encode(
            json.dumps({"reason": reason}),
            event="shutdown",
            id=last_id,
            retry=random.randint(min(low, high), high),  # spreading load, not a secret
        )


@dataclass(slots=True)
class _Page:
    """A page of a resume's history: its events encoded, the order key and id of its last one,
    whether more may follow, whether it holds the topic's final event."""

    chunks: list[bytes]
    key: tuple[int, ...]
    last_id: str
    more: bool
    ends: bool


def _encode_entry(entry: Entry) -> bytes:
    return encode(entry.data, event=entry.event, id=entry.id)
