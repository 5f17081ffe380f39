"""The ``store`` fixture: one contract suite, run against every backend.

A store is where topics live; ``store.instance()`` is one app instance's backend on it. For
``memory`` every instance is the same object (one process stands in for the cluster); for
``redis`` each instance is its own ``RedisBackend`` (own reader, own pool) on one throwaway
``redis-server`` started by the ``redis_server`` fixture; ``sqlite`` is chat's
``SqliteBackend`` on a real database file (one object per process, as memory; losing the store
is a new file).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from chat.backend import SqliteBackend
from chat.db import Database
from shared.backends import Backend, MemoryBackend
from shared.backends.redis import RedisBackend, parse_stream_id, split_event_id
from tests.rig import RedisServer

SMALL = 5  # default retention: small, so eviction is easy to reach


@dataclass
class Store:
    kind: str
    _make: Callable[[int], Backend]
    # The store loses its history: memory, the process ends (the next instance is a new one);
    # redis, FLUSHALL (as a restart without persistence, or a failover to an empty replica).
    lose: Callable[[], Awaitable[None]]
    made: list[Backend] = field(default_factory=list)
    # Whether the store drops old events past a retention (memory, Redis). Chat's SQLite log keeps
    # every event: a resume too far behind is refused per read (``evicted`` past the read's limit).
    evicts: bool = True
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def needs_retention(self) -> None:
        if not self.evicts:
            pytest.skip(f"{self.kind} keeps every event: nothing is evicted by retention")

    def instance(self, retention: int = SMALL) -> Backend:
        """The backend of one more app instance on this store, keeping ``retention`` events per topic."""
        backend = self._make(retention)
        self.made.append(backend)
        return backend

    def future_id(self, latest: str) -> str:
        """A well-formed id past ``latest``: what a client of a wiped server might send."""
        if self.kind in ("memory", "sqlite"):
            epoch, _, seq = latest.partition("-")
            return f"{epoch}-{int(seq) + 100}"
        raw, tag = split_event_id(latest)
        ms, _ = parse_stream_id(raw)
        return f"{ms + 100_000}-0.{tag}"

    def foreign_id(self, stored: str) -> str:
        """Well-formed, not from the future, yet never handed out by this store."""
        if self.kind in ("memory", "sqlite"):
            epoch, _, _ = stored.partition("-")
            other = "".join("a" if c != "a" else "b" for c in epoch)
            return f"{other}-1"
        raw, tag = split_event_id(stored)
        ms, seq = parse_stream_id(raw)
        return f"{ms}-{seq + 1}.{tag}"  # callers make sure the next entry has a later millisecond


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis), "sqlite"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    s: Store
    if request.param == "memory":
        memory: dict[int, MemoryBackend] = {}

        def make_memory(retention: int) -> Backend:
            if retention not in memory:
                memory[retention] = MemoryBackend(max_events=retention)
            return memory[retention]

        async def lose_memory() -> None:
            memory.clear()

        s = Store("memory", make_memory, lose_memory)
    elif request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")

        def make_redis(retention: int) -> Backend:
            return RedisBackend.from_url(f"{server.url}?maxlen={retention}&trim=exact&prefix=test:")

        async def flushall() -> None:
            client = Redis.from_url(server.url)
            await client.flushall()
            await client.aclose()

        s = Store("redis", make_redis, flushall)
    else:
        tmp = request.getfixturevalue("tmp_path")
        current: list[tuple[Database, SqliteBackend]] = []

        async def new_file() -> None:
            db = Database(tmp / f"chat{len(s.closers)}.sqlite3")
            await db.open()
            s.closers.append(db.close)
            current[:] = [(db, SqliteBackend(db))]

        def make_sqlite(retention: int) -> Backend:
            return current[0][1]

        s = Store("sqlite", make_sqlite, new_file, evicts=False)
        await new_file()
    yield s
    for backend in s.made:
        await backend.close()
    for close in s.closers:
        await close()
