"""Redis backend: each topic is a Redis Stream, so every instance of an app shares ids and history.

Keys (``prefix`` defaults to ``sse:``):

- ``{prefix}stream:{topic}``: stored events. The stream entry id with the history's epoch tag
  (``1700000000000-0.3f9c1a2b``) is the SSE id, so a client can resume on any instance, and an id
  of a history Redis lost is told apart from one of the new history (issue 13.3).
- ``{prefix}ephemeral:{topic}``: ephemeral events, a short capped stream with a TTL. Each one
  records the id of the newest stored event when it was published (its *anchor*), so every
  listener delivers it in the same place among the stored events.
- ``{prefix}wake:{instance}``: nudges this instance's reader when it starts reading a topic.
- ``{prefix}epoch``: the history's epoch (as Centrifugo keeps one per stream), made with
  ``SET NX`` by whoever finds it missing. Redis that lost its data (a restart without
  persistence, FLUSHALL, a failover to an empty replica) has lost it too; the reader of every
  instance checks it after each ``XREAD`` and before it delivers what that read, so when it
  changes every live listener fails with ``UnknownEventId("epoch")`` (the hub turns that into one
  ``reset``) before any event of the new history reaches it. Every id carries its epoch's tag
  (Centrifugo's design): a resume from an id of another epoch gets ``reset`` (reason ``epoch``),
  read in the same transaction as the replay.

Connections per instance: **one** reader connection, a blocking ``XREAD`` over every topic the
process listens to (the hub runs one ``listen()`` per topic), plus a bounded pool
(``max_connections``, default 10) for publishes, replays and checks. Neither grows with the
number of SSE subscribers or topics.

Retention: appends go through a Lua script that trims in small batches with ``XTRIM MINID`` and
records the last trimmed id with ``XSETID ... MAXDELETEDID``. Plain ``XADD MAXLEN`` does not
update ``max-deleted-entry-id``, and without it "is anything after this id gone?" cannot be
answered exactly. Needs Redis 7.0 or later.

The stream layout and that retention live in one place, ``lua/stream.lua`` (``sse_append``). An
app that must append events in the same atomic step as its own writes builds its script on it
with :meth:`RedisBackend.stream_script` (chat's sends do), instead of writing the streams itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from .base import Backend, BackendUnavailable, Entry, OpStats, ResetReason, UnknownEventId
from .lua import load_lua, with_streams
from .redis_url import REDIS_SCHEMES, make_pool, url_options, where

__all__ = ["RedisBackend", "StreamScript", "parse_stream_id"]

log = logging.getLogger(__name__)

# What "Redis cannot take this right now" looks like; anything else is a bug and propagates.
_UNAVAILABLE = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.ReadOnlyError,
    rex.OutOfMemoryError,
    rex.TryAgainError,
    rex.ClusterDownError,
    ConnectionError,
    TimeoutError,
)

_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})", re.ASCII)
_U64 = 2**64 - 1
_ZERO = "0-0"
# How long a position noted by latest_id() stays a valid start for the listen() that follows.
_EPH_HINT_MAX_AGE = 5.0
Key = tuple[int, int]
T = TypeVar("T")


class StreamScript:
    """A script made by :meth:`RedisBackend.stream_script`: ``await script(keys, args)`` runs it
    with the backend's retention added as the last two ARGV (the library takes them off)."""

    __slots__ = ("_backend", "_script")

    def __init__(self, backend: RedisBackend, script: AsyncScript) -> None:
        self._backend = backend
        self._script = script

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        b = self._backend
        return await self._script(keys=keys, args=[*args, b.maxlen, b.trim_slack])


def parse_stream_id(event_id: str) -> Key:
    """``"ms-seq"`` as ``(ms, seq)``; ``ValueError`` for anything Redis would not have made."""
    m = _ID.fullmatch(event_id)
    if m is None or int(m[1]) > _U64 or int(m[2]) > _U64:
        raise ValueError(f"not a Redis stream id: {event_id[:80]!r}")
    return int(m[1]), int(m[2])


def split_event_id(event_id: str) -> tuple[str, str | None]:
    """An SSE id as (the stream id, the epoch tag or ``None`` if it has none)."""
    raw, sep, tag = event_id.partition(".")
    return raw, (tag if sep else None)


def epoch_tag(epoch: str | None) -> str:
    """The part of an epoch ids carry: its random suffix (8 hex digits)."""
    return epoch.rpartition(".")[2] if epoch else ""


def _tagged(stream_id: str, tag: str) -> str:
    return f"{stream_id}.{tag}" if tag else stream_id


def _entry(entry_id: str | None, fields: Mapping[str, str], tag: str = "") -> Entry:
    return Entry(_tagged(entry_id, tag) if entry_id is not None else None, fields.get("e"), fields.get("d", ""))


@dataclass(slots=True, eq=False)
class _Listener:
    """One ``listen()`` call: where it is in the topic's streams, and what waits for it."""

    topic: str
    cursor: str  # last stored id delivered (or the point to read after)
    eph_cursor: str  # last ephemeral-stream id seen
    checked: bool = False  # cursor verified against retention since the reader (re)connected
    round: int = -1  # the XREAD round it took part in
    pending: list[Entry] = field(default_factory=list)
    # Ephemeral entries waiting for the stored entry they were published after: (anchor, since, entry)
    held: deque[tuple[Key, float, Entry]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    error: Exception | None = None
    tag: str = ""  # the epoch tag of the history it reads (for the ids it names)

    @property
    def position(self) -> str:
        """Its cursor as an SSE id."""
        return _tagged(self.cursor, self.tag)

    def take(
        self, stored: list[tuple[str, dict[str, str]]], ephemeral: list[tuple[str, dict[str, str]]], tag: str
    ) -> None:
        """Merge one round's entries into ``pending``: each ephemeral entry right after its anchor."""
        cursor, eph_cursor = parse_stream_id(self.cursor), parse_stream_id(self.eph_cursor)
        now = time.monotonic()
        for eid, fields in ephemeral:
            key = parse_stream_id(eid)
            if key > eph_cursor:
                try:
                    anchor = parse_stream_id(fields.get("a", _ZERO))
                except ValueError:
                    anchor = (0, 0)
                self.held.append((anchor, now, _entry(None, fields)))
                self.eph_cursor, eph_cursor = eid, key
        out: list[Entry] = []
        held = self.held
        for sid, fields in stored:
            key = parse_stream_id(sid)
            if key <= cursor:
                continue
            while held and held[0][0] < key:
                out.append(held.popleft()[2])
            out.append(_entry(sid, fields, tag))
            self.cursor, cursor = sid, key
        # An anchor the stream never reaches (it was lost with a Redis restart) must not hold
        # ephemeral events forever: after 5 s they go out anyway.
        while held and (held[0][0] <= cursor or now - held[0][1] > 5.0):
            out.append(held.popleft()[2])
        if out:
            self.pending.extend(out)
            self.wake.set()


class RedisBackend(Backend):
    """Topics as Redis Streams shared by every instance; see the module docstring for the layout.

    ``maxlen`` events are kept per topic (up to ``maxlen + trim_slack`` between trims; the
    default slack is a tenth of ``maxlen``, at most 100; ``trim="exact"`` in the URL makes it 0).
    Publishing fails fast with ``BackendUnavailable`` while Redis is unreachable; listeners
    reconnect with backoff and resume from the last id they delivered.
    """

    #: Entries per stream per XREAD round.
    READ_COUNT: ClassVar[int] = 1000
    #: How long one XREAD blocks before it is issued again; bounds how long a silently dead
    #: connection goes unnoticed (plus the socket timeout).
    BLOCK_SECONDS: ClassVar[float] = 10.0
    RETRY_MIN: ClassVar[float] = 0.05
    RETRY_MAX: ClassVar[float] = 2.0

    spans_processes = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        maxlen: int = 10_000,
        trim_slack: int | None = None,
        prefix: str = "sse:",
        ephemeral_maxlen: int = 1000,
        ephemeral_ttl: float = 60.0,
        **redis_options: Any,
    ) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        if ephemeral_maxlen < 1:
            raise ValueError("ephemeral_maxlen must be at least 1")
        self.url = url
        self.maxlen = maxlen
        self.trim_slack = min(maxlen // 10, 100) if trim_slack is None else trim_slack
        if self.trim_slack < 0:
            raise ValueError("trim_slack must not be negative")
        self.prefix = prefix
        self.ephemeral_maxlen = ephemeral_maxlen
        self.ephemeral_ttl = ephemeral_ttl
        # Short timeouts: a publish must fail fast (then the caller answers 503), not hang.
        # No retries: a retried XADD whose first attempt did land would publish twice.
        options: dict[str, Any] = {
            "max_connections": 10,
            "timeout": 1.0,  # waiting for a free pooled connection
            "socket_timeout": 1.0,
            "socket_connect_timeout": 0.5,
            "client_name": "sse-hub",
            **redis_options,
            **url_options(url),
        }
        # Our parsing expects RESP2 replies decoded to str, whatever the URL says.
        options.update(protocol=2, decode_responses=True, retry=Retry(NoBackoff(), 0))
        self._options = options
        self.instance = secrets.token_hex(6)
        self._wake_key = f"{prefix}wake:{self.instance}"
        self._wake_cursor = _ZERO
        self._redis: Redis | None = None
        self._reader: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._listeners: dict[str, set[_Listener]] = {}
        self._eph_hints: dict[str, tuple[str, float]] = {}  # topic -> (ephemeral id, when), see latest_id
        self._have_listeners = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Future[Any]] = set()
        self._version = 0  # bumped whenever a listener joins
        self._reading: int | None = None  # the version the XREAD in flight was built from
        self._round = 0
        self._closed = False
        self._epoch_key = f"{prefix}epoch"
        self.stats = OpStats()  # calls, errors and latency per operation (shared.metrics)
        self.epoch: str | None = None  # the history this instance's listeners are reading
        # The epoch last read from Redis by any call (publishes and replays tag ids with it).
        self._epoch_seen: str | None = None

    # -- configuration ------------------------------------------------------------------------

    _OWN_PARAMS: ClassVar[frozenset[str]] = frozenset({"maxlen", "prefix", "trim", "ephemeral_maxlen"})

    @classmethod
    def from_url(cls, url: str) -> RedisBackend:
        """``redis://[user:pass@]host:port/db?maxlen=10000&prefix=sse:&trim=approx|exact``, or
        ``redis+sentinel://host:port,host:port/service/db?...`` (see :mod:`.redis_url`).

        ``ephemeral_maxlen`` is also ours; every other query parameter (``max_connections``,
        ``socket_timeout``, ``socket_connect_timeout``, ``timeout``, ``ssl_*``...) goes to redis-py.
        """
        parts = urlsplit(url)
        if parts.scheme not in REDIS_SCHEMES:
            raise ValueError(
                f"not a Redis URL: {where(url)!r} (expected redis://host:port/db or "
                "redis+sentinel://host:port,host:port/service/db)"
            )
        ours: dict[str, str] = {}
        theirs: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in cls._OWN_PARAMS:
                ours[name] = value
            else:
                theirs.append((name, value))
        kwargs: dict[str, Any] = {}
        for name in ("maxlen", "ephemeral_maxlen"):
            if name in ours:
                try:
                    kwargs[name] = int(ours[name])
                except ValueError:
                    raise ValueError(f"{name} in {url!r} must be a whole number, not {ours[name]!r}") from None
        if "prefix" in ours:
            kwargs["prefix"] = ours["prefix"]
        trim = ours.get("trim", "approx")
        if trim not in ("approx", "exact"):
            raise ValueError(f"trim in {url!r} must be 'approx' or 'exact', not {trim!r}")
        if trim == "exact":
            kwargs["trim_slack"] = 0
        clean = urlunsplit(parts._replace(query=urlencode(theirs)))
        return cls(clean, **kwargs)

    def stream_key(self, topic: str) -> str:
        """The Redis key of ``topic``'s stored events."""
        return f"{self.prefix}stream:{topic}"

    def stream_script(self, source: str, client: Redis | None = None) -> StreamScript:
        """An app's Lua script that appends events to this backend's streams in the same atomic
        step as its own writes (chat: a message, its idempotency key and its event).

        ``source`` runs after ``lua/stream.lua``: it appends with ``sse_append(stream_key, data,
        event, mark, on_trim)`` (keys from :meth:`stream_key`), with this backend's retention,
        the stream fields the backend reads, and ``on_trim(mark)`` for each trimmed entry that
        carries a mark. ``client``: the connection to run it on (default: the backend's own).
        """
        return StreamScript(self, (client or self._client()).register_script(with_streams(source)))

    def ephemeral_key(self, topic: str) -> str:
        return f"{self.prefix}ephemeral:{topic}"

    @property
    def _where(self) -> str:
        return where(self.url)

    # -- lifetime ------------------------------------------------------------------------------

    def _client(self) -> Redis:
        if self._redis is None:
            self._redis = Redis(connection_pool=make_pool(self.url, self._options))
            self._scripts = {
                "append": self._redis.register_script(with_streams(load_lua("shared.backends", "lua/append.lua"))),
                "ephemeral": self._redis.register_script(load_lua("shared.backends", "lua/ephemeral.lua")),
            }
        return self._redis

    async def _io(self, coro: Awaitable[T]) -> T:
        """Await redis-py in a task of its own, through a shield.

        redis-py (8.1) can swallow a cancellation that lands while it opens a connection; a
        listener or reader that ignored its cancel would keep a hub from shutting down. Through
        the shield the caller is cancelled regardless; the orphan is cancelled too and, at the
        latest, ends with its connection in ``close()``.
        """
        task = asyncio.ensure_future(coro)
        self._inflight.add(task)
        task.add_done_callback(self._io_done)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            raise

    def _io_done(self, task: asyncio.Future[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here, in case its caller was cancelled

    async def _pipeline(self, fill: Callable[[Pipeline], object], *, transaction: bool) -> list[Any]:
        """Run the commands ``fill`` queues (in MULTI/EXEC if ``transaction``); errors come back in place."""
        async with self._client().pipeline(transaction=transaction) as pipe:
            fill(pipe)
            return list(await pipe.execute(raise_on_error=False))

    async def start(self) -> None:
        self._closed = False
        try:
            info = await self._client().info("server")
        except _UNAVAILABLE as exc:
            # Serve anyway: publishes answer 503 and listeners retry until Redis is back.
            log.warning("Redis at %s is not reachable yet (%s); continuing", self._where, exc)
            return
        except rex.ResponseError as exc:  # INFO refused (ACL): the version cannot be checked
            log.warning("cannot check the version of Redis at %s (%s)", self._where, exc)
            return
        major = int(str(info.get("redis_version", "0")).split(".")[0] or 0)
        if major < 7:
            raise RuntimeError(
                f"the Redis backend needs Redis 7.0 or later; {self._where} runs {info.get('redis_version')}"
            )

    async def close(self) -> None:
        self._closed = True
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.wake.set()
        deadline = time.monotonic() + 2.0
        while self._inflight and time.monotonic() < deadline:
            # Cancel the orphans of cancelled callers again: a cancel that landed while redis-py
            # was connecting was swallowed, one landing now (mid-command) is not.
            for orphan in list(self._inflight):
                orphan.cancel()
            await asyncio.wait(set(self._inflight), timeout=0.05)
        await self._drop_reader()
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose(close_connection_pool=True)

    # -- publishing and history ----------------------------------------------------------------

    async def append(self, topic: str, data: str, event: str | None = None, *, ephemeral: bool = False) -> Entry:
        with self.stats.timed("append"):
            return await self._append(topic, data, event, ephemeral=ephemeral)

    async def _append(self, topic: str, data: str, event: str | None = None, *, ephemeral: bool = False) -> Entry:
        if self._closed:
            # Not a new connection pool behind close()'s back: nothing would ever close it.
            raise BackendUnavailable(f"the Redis backend for {self._where} is closed")
        self._client()
        extra = [event] if event is not None else []
        try:
            if ephemeral:
                keys = [self.stream_key(topic), self.ephemeral_key(topic)]
                ttl_ms = max(1, int(self.ephemeral_ttl * 1000))
                # Through _io: redis-py may swallow a cancel that lands while it connects.
                script = self._scripts["ephemeral"]
                await self._io(script(keys=keys, args=[self.ephemeral_maxlen, ttl_ms, data, *extra]))
                return Entry(None, event, data)
            args = [data, *extra, self.maxlen, self.trim_slack]  # retention last: see lua/stream.lua
            keys = [self.stream_key(topic), self._epoch_key]
            new_id, epoch = await self._io(self._scripts["append"](keys=keys, args=args))
            if not epoch:
                epoch = await self._current_epoch()  # Redis lost it: this entry begins a new history
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"cannot publish: Redis at {self._where} is unavailable ({exc})") from exc
        # Tagged with the epoch it was written in, read in the same script.
        self._epoch_seen = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        return Entry(_tagged(str(new_id), epoch_tag(self._epoch_seen)), event, data)

    async def event_id(self, stream_id: str) -> str:
        """:meth:`tag_id`, reading the epoch from Redis first if this instance has not yet."""
        if self.epoch is None and self._epoch_seen is None:
            try:
                self._epoch_seen = await self._current_epoch()
            except _UNAVAILABLE as exc:
                raise BackendUnavailable(f"Redis at {self._where} is unavailable ({exc})") from exc
        return self.tag_id(stream_id)

    def tag_id(self, stream_id: str) -> str:
        """A stream id of this backend's streams (as a Lua script returns it) as an SSE id."""
        return _tagged(stream_id, epoch_tag(self._epoch_seen or self.epoch))

    def order_key(self, event_id: str) -> tuple[int, ...]:
        return parse_stream_id(split_event_id(event_id)[0])

    async def latest_id(self, topic: str) -> str | None:
        with self.stats.timed("latest_id"):
            return await self._latest_id(topic)

    async def _latest_id(self, topic: str) -> str | None:
        def fill(pipe: Pipeline) -> None:
            pipe.xrevrange(self.stream_key(topic), "+", "-", count=1)
            pipe.xrevrange(self.ephemeral_key(topic), "+", "-", count=1)
            pipe.get(self._epoch_key)

        try:
            last, eph_last, epoch = await self._pipeline(fill, transaction=False)
            if isinstance(epoch, str | bytes) and epoch:
                self._epoch_seen = epoch.decode() if isinstance(epoch, bytes) else epoch
            else:
                self._epoch_seen = await self._current_epoch()
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"Redis at {self._where} is unavailable ({exc})") from exc
        if isinstance(last, Exception):
            raise BackendUnavailable(f"Redis at {self._where} refused XREVRANGE ({last})")
        # The hub calls latest_id() and then listen(): ephemeral events published in between
        # (a typing notice right after a subscribe) must reach the listener too, so it starts
        # from the ephemeral stream's position noted here, if recent, not from where it is then.
        if not isinstance(eph_last, Exception):
            eph = str(eph_last[0][0]) if eph_last else _ZERO
            now = time.monotonic()
            if len(self._eph_hints) > 1000:  # noted by callers that never listened
                self._eph_hints = {k: v for k, v in self._eph_hints.items() if now - v[1] < _EPH_HINT_MAX_AGE}
            self._eph_hints[topic] = (eph, now)
        return self.tag_id(str(last[0][0])) if last else None

    async def ping(self) -> None:
        try:
            await self._io(self._client().ping())
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"Redis at {self._where} is unavailable ({exc})") from exc

    def describe(self) -> str:
        return f"redis at {self._where}"

    async def origin_id(self, topic: str) -> str:
        return await self.event_id(_ZERO)  # before any entry; see _verdict for a stream not made yet

    async def read_after(self, topic: str, event_id: str, limit: int) -> list[Entry]:
        with self.stats.timed("read_after"):
            return await self._read_after(topic, event_id, limit)

    async def _read_after(self, topic: str, event_id: str, limit: int) -> list[Entry]:
        raw, tag = split_event_id(event_id)
        try:
            after = parse_stream_id(raw)
        except ValueError:
            raise UnknownEventId(event_id, "unknown") from None
        if tag is None:
            raise UnknownEventId(event_id, "unknown")  # no epoch: not an id we hand out
        key = self.stream_key(topic)

        def fill(pipe: Pipeline) -> None:
            pipe.exists(key)
            pipe.xinfo_stream(key)
            pipe.xrange(key, raw, raw, count=1)
            pipe.xrange(key, "(" + raw, "+", count=max(limit, 1))
            pipe.get(self._epoch_key)

        try:
            replies = await self._pipeline(fill, transaction=True)
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"Redis at {self._where} is unavailable ({exc})") from exc
        epoch = _ok(replies[4])
        current = epoch.decode() if isinstance(epoch, bytes) else epoch
        if not current or epoch_tag(current) != tag:
            # Another history: Redis lost the one this id is from (or not made a new one yet).
            raise UnknownEventId(event_id, "epoch")
        self._epoch_seen = current
        reason = _verdict(_info(replies[0], replies[1]), after, exists=bool(_ok(replies[2])))
        if reason is not None:
            raise UnknownEventId(event_id, reason)
        return [_entry(i, f, tag) for i, f in _ok(replies[3])] if limit > 0 else []

    # -- listening -------------------------------------------------------------------------------

    async def listen(self, topic: str, after: str | None) -> AsyncIterator[list[Entry]]:
        tag: str | None = None
        if after is not None:
            given, (after, tag) = after, split_event_id(after)
            try:
                parse_stream_id(after)
            except ValueError:
                raise UnknownEventId(given, "unknown") from None
            if tag is None:
                raise UnknownEventId(given, "unknown")
        listener = await self._open(topic, after, tag)
        if listener is None:
            return  # closed while waiting for Redis
        self._listeners.setdefault(topic, set()).add(listener)
        self._version += 1
        version = self._version
        self._have_listeners.set()
        if self._reader_task is None or self._reader_task.done():
            self._reader_task = asyncio.create_task(self._read_loop(), name="sse-redis-reader")
        try:
            if self._reading is not None and self._reading < version:
                await self._nudge_reader()
            while True:
                if listener.pending:
                    batch, listener.pending = listener.pending, []
                    yield batch
                    continue
                if listener.error is not None:
                    raise listener.error
                if self._closed:
                    return
                await listener.wake.wait()
                listener.wake.clear()
        finally:
            self._forget(listener)

    async def _open(self, topic: str, after: str | None, tag: str | None = None) -> _Listener | None:
        """Check ``after`` (a stream id, of the epoch ``tag``) and note where the ephemeral stream
        is now; waits while Redis is down."""
        key, eph_key = self.stream_key(topic), self.ephemeral_key(topic)

        def fill(pipe: Pipeline) -> None:
            pipe.exists(key)
            pipe.xinfo_stream(key)
            pipe.xrevrange(eph_key, "+", "-", count=1)
            pipe.get(self._epoch_key)
            if after is not None:
                pipe.xrange(key, after, after, count=1)

        delay = self.RETRY_MIN
        while not self._closed:
            try:
                replies = await self._io(self._pipeline(fill, transaction=True))
            except _UNAVAILABLE as exc:
                log.info("listen(%r): Redis at %s unavailable (%s); retrying", topic, self._where, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.RETRY_MAX)
                continue
            info = _info(replies[0], replies[1])
            eph_last = _ok(replies[2])
            eph_cursor = str(eph_last[0][0]) if eph_last else _ZERO
            hint = self._eph_hints.pop(topic, None)
            if hint is not None and time.monotonic() - hint[1] < _EPH_HINT_MAX_AGE:
                eph_cursor = min(eph_cursor, hint[0], key=parse_stream_id)
            epoch = _ok(replies[3])
            current = epoch.decode() if isinstance(epoch, bytes) else epoch
            if after is None:
                # "From the start of what is kept": right after the last trimmed entry.
                start = str(info["max-deleted-entry-id"]) if info is not None else _ZERO
                return _Listener(topic, start, eph_cursor, tag=epoch_tag(current))
            if not current or epoch_tag(current) != tag:
                raise UnknownEventId(_tagged(after, tag or ""), "epoch")
            reason = _verdict(info, parse_stream_id(after), exists=bool(_ok(replies[4])))
            if reason is not None:
                raise UnknownEventId(_tagged(after, tag or ""), reason)
            return _Listener(topic, after, eph_cursor, tag=tag or "")
        return None

    def _forget(self, listener: _Listener) -> None:
        listeners = self._listeners.get(listener.topic)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[listener.topic]

    def _fail(self, listener: _Listener, exc: Exception) -> None:
        listener.error = exc
        listener.wake.set()
        self._forget(listener)

    async def _nudge_reader(self) -> None:
        """Make the XREAD in flight return, so the next one includes the new topic."""

        def fill(pipe: Pipeline) -> None:
            pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.pexpire(self._wake_key, 60_000)

        try:
            await self._io(self._pipeline(fill, transaction=False))
        except _UNAVAILABLE:
            pass  # the reader is failing too; it rebuilds its XREAD when it reconnects

    async def _reader_client(self) -> Redis:
        if self._reader is None:
            options = dict(self._options)
            options["socket_timeout"] = self.BLOCK_SECONDS + max(2.0, float(options.get("socket_timeout") or 0))
            options["client_name"] = f"{options.get('client_name') or 'sse-hub'}-reader"
            for name in ("max_connections", "timeout"):
                options.pop(name, None)
            # A sentinel URL makes it a master connection too: it asks the sentinels again each
            # time it reconnects, so after a failover the loop's reconnect finds the new master.
            pool = make_pool(self.url, {**options, "max_connections": 1}, blocking=False)
            self._reader = Redis(connection_pool=pool, single_connection_client=True)
        return self._reader

    async def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                await reader.aclose(close_connection_pool=True)
            except Exception:  # the connection is already broken; nothing to release
                log.debug("closing the Redis reader connection failed", exc_info=True)

    async def _read_loop(self) -> None:
        """The one reader of this instance: XREAD over every listened topic, until ``close()``."""
        delay = self.RETRY_MIN
        down_since: float | None = None
        while not self._closed:
            if not self._listeners:
                self._have_listeners.clear()
                await self._have_listeners.wait()
                continue
            try:
                if self.epoch is None or down_since is not None:
                    await self._check_epoch()  # a Redis that came back may be an empty one
                await self._check_retention()
                await self._read_round()
            except _UNAVAILABLE as exc:
                self._reading = None
                await self._drop_reader()
                if self._closed:
                    return
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("Redis at %s unavailable (%s); listeners will resume when it is back", self._where, exc)
                # Resume means re-checking every cursor: Redis may have trimmed (or lost) data meanwhile.
                for listeners in self._listeners.values():
                    for listener in listeners:
                        listener.checked = False
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.RETRY_MAX)
                continue
            except Exception as exc:
                log.exception("Redis reader failed; ending its listeners")
                for listeners in list(self._listeners.values()):
                    for listener in list(listeners):
                        self._fail(listener, exc)
                return
            if down_since is not None:
                log.warning(
                    "Redis at %s back after %.1f s; listeners resumed", self._where, time.monotonic() - down_since
                )
                down_since = None
            delay = self.RETRY_MIN

    async def _max_deleted(self, topics: Iterable[str]) -> dict[str, Key]:
        """``max-deleted-entry-id`` of each topic's stream that exists."""
        names = list(topics)

        def fill(pipe: Pipeline) -> None:
            for topic in names:
                pipe.exists(self.stream_key(topic))
                pipe.xinfo_stream(self.stream_key(topic))

        replies = await self._io(self._pipeline(fill, transaction=False))
        out: dict[str, Key] = {}
        for i, topic in enumerate(names):
            info = _info(replies[2 * i], replies[2 * i + 1])
            if info is not None:
                out[topic] = parse_stream_id(str(info["max-deleted-entry-id"]))
        return out

    async def _check_retention(self) -> None:
        """Fail listeners whose next entry was trimmed before they read it (a gap)."""
        unchecked = [x for listeners in self._listeners.values() for x in listeners if not x.checked]
        if not unchecked:
            return
        deleted = await self._max_deleted({x.topic for x in unchecked})
        for listener in unchecked:
            self._check_one(listener, deleted.get(listener.topic), parse_stream_id(listener.cursor))

    def _check_one(self, listener: _Listener, max_deleted: Key | None, cursor: Key) -> None:
        if max_deleted is not None and max_deleted > cursor:
            # A stream missing or recreated (Redis lost its data) is no gap by itself: what is
            # there now is newer than the cursor and gets delivered.
            self._fail(listener, UnknownEventId(listener.position, "evicted"))
        else:
            listener.checked = True

    async def _current_epoch(self) -> str:
        """The epoch in Redis, made now if it is missing (the first to look after a loss makes it)."""
        fresh = f"{int(time.time() * 1000)}.{secrets.token_hex(4)}"

        def fill(pipe: Pipeline) -> None:
            pipe.set(self._epoch_key, fresh, nx=True)
            pipe.get(self._epoch_key)

        replies = await self._io(self._pipeline(fill, transaction=True))
        return str(_ok(replies[1]))

    async def _check_epoch(self) -> None:
        """Fail every listener with ``UnknownEventId("epoch")`` if Redis's history is not the one
        they were reading: their cursors point into a history that is gone."""
        epoch = await self._current_epoch()
        known, self.epoch = self.epoch, epoch
        self._epoch_seen = epoch
        if known is None or known == epoch:
            return
        log.warning("Redis at %s lost its data (epoch %s, was %s); resetting every listener", self._where, epoch, known)
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                self._fail(listener, UnknownEventId(listener.position, "epoch"))

    async def _read_round(self) -> None:
        reader = await self._reader_client()
        if any(not x.checked for listeners in self._listeners.values() for x in listeners):
            return  # a listener joined meanwhile: check it first, then read it along with the rest
        self._round += 1
        rnd = self._round
        streams: dict[Any, Any] = {self._wake_key: self._wake_cursor}
        where: dict[str, tuple[str, bool]] = {}  # stream key -> (topic, is ephemeral)
        for topic, listeners in self._listeners.items():
            ready = [x for x in listeners if x.checked]
            if not ready:
                continue
            for x in ready:
                x.round = rnd
            key, eph_key = self.stream_key(topic), self.ephemeral_key(topic)
            streams[key] = min((x.cursor for x in ready), key=parse_stream_id)
            streams[eph_key] = min((x.eph_cursor for x in ready), key=parse_stream_id)
            where[key], where[eph_key] = (topic, False), (topic, True)
        self._reading = self._version
        try:
            block_ms = int(self.BLOCK_SECONDS * 1000)
            reply: Any = await self._io(reader.xread(streams, count=self.READ_COUNT, block=block_ms))
        finally:
            self._reading = None
        # Before anything read is delivered: what a lost Redis hands out next is a new history.
        await self._check_epoch()
        if not reply:
            return
        got: dict[str, tuple[list[tuple[str, dict[str, str]]], list[tuple[str, dict[str, str]]]]] = {}
        for key, items in reply:
            if key == self._wake_key:
                self._wake_cursor = str(items[-1][0])
                continue
            topic, is_eph = where[key]
            got.setdefault(topic, ([], []))[1 if is_eph else 0].extend(items)
        # A full batch means this reader is behind: make sure nothing was trimmed before it read it.
        full = min(self.READ_COUNT, self.maxlen)
        behind = [topic for topic, (stored, _) in got.items() if len(stored) >= full]
        if behind:
            deleted = await self._max_deleted(behind)
            for topic in behind:
                for listener in list(self._listeners.get(topic, ())):
                    if listener.round == rnd:
                        self._check_one(listener, deleted.get(topic), parse_stream_id(listener.cursor))
        for topic, (stored, eph) in got.items():
            for listener in list(self._listeners.get(topic, ())):
                if listener.round == rnd:
                    listener.take(stored, eph, epoch_tag(self.epoch))


def _ok(reply: Any) -> Any:
    if isinstance(reply, Exception):
        raise reply
    return reply


def _info(exists: Any, info: Any) -> dict[str, Any] | None:
    """XINFO STREAM's reply, ``None`` if the stream does not exist (that reply is an error)."""
    if not _ok(exists):
        return None
    return dict(_ok(info))


def _verdict(info: Mapping[str, Any] | None, after: Key, *, exists: bool) -> ResetReason | None:
    """Can a reader resume right after ``after``? ``None`` if so, else why not."""
    if info is None and after == (0, 0):
        return None  # the origin of a topic with no events yet: nothing was missed
    if info is None or after > parse_stream_id(str(info["last-generated-id"])):
        return "unknown"  # no such stream (any more), or an id from the future
    if exists:
        return None
    max_deleted = parse_stream_id(str(info["max-deleted-entry-id"]))
    if after == max_deleted:
        return None  # the last trimmed entry: everything after it is still there
    if after < max_deleted:
        return "evicted"
    # Well-formed and in range, yet never an entry of this stream: from an earlier incarnation
    # of it (Redis lost its data and the stream was re-created), or from another stream.
    return "foreign"
