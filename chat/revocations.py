"""Revoked sessions: cookies that were signed out or replaced by a newer join, refused from then on.

A cookie is signed, so without this list a copy of it (planted by a page on another port of the
same host, which the browser lets write our cookies, or taken before sign-out) would work until
it expires. Each sign-out and each join puts the cookie's session id here for ``max_age`` (no
cookie with that id is issued after its revocation, so none lives longer).

``SqliteRevocations`` keeps them in the chat database, and in memory (one process: checking a
request costs a dict lookup); ``chat.redis_revocations.RedisRevocations`` in Redis keys with a
TTL, so a sign-out on one instance holds on every other.
"""

from __future__ import annotations

import sqlite3
import time
from abc import ABC, abstractmethod

from .db import Database

__all__ = ["Revocations", "SqliteRevocations"]


class Revocations(ABC):
    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load or connect (the app's startup calls it once the store is open)."""

    @abstractmethod
    async def revoke(self, sid: str, ttl: float) -> None:
        """Refuse the session ``sid`` for the next ``ttl`` seconds."""

    @abstractmethod
    async def is_revoked(self, sid: str) -> bool:
        """Was this session signed out or replaced?"""


_TABLE = "CREATE TABLE IF NOT EXISTS revoked_sessions (sid TEXT PRIMARY KEY, until REAL NOT NULL)"


class SqliteRevocations(Revocations):
    """In the chat's SQLite file (so they survive a restart, as the cookies do) and in memory."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._until: dict[str, float] = {}  # sid -> when its record may go
        self._next_prune = 0.0

    async def start(self) -> None:
        def load(conn: sqlite3.Connection) -> list[tuple[str, float]]:
            conn.execute(_TABLE)
            conn.execute("DELETE FROM revoked_sessions WHERE until < ?", (time.time(),))
            return [(row[0], row[1]) for row in conn.execute("SELECT sid, until FROM revoked_sessions")]

        self._until = dict(await self.db.write(load))

    async def revoke(self, sid: str, ttl: float) -> None:
        now = time.time()
        until = now + ttl
        prune = now >= self._next_prune
        if prune:
            self._next_prune = now + 3600.0
            self._until = {s: t for s, t in self._until.items() if t >= now}

        # In memory first: even if the write fails (a 503 says to retry), this process refuses it.
        self._until[sid] = until

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO revoked_sessions (sid, until) VALUES (?, ?)", (sid, until))
            if prune:
                conn.execute("DELETE FROM revoked_sessions WHERE until < ?", (now,))

        await self.db.write(tx)

    async def is_revoked(self, sid: str) -> bool:
        until = self._until.get(sid)
        return until is not None and until >= time.time()
