"""Login sessions: what the page's login cookie names, kept on the server (issue 14.1).

The cookie holds a random secret, a new one per log-in; the server keeps only its SHA-256 (the
session's ``key``), so neither the store nor the audit log nor a message between instances holds
anything that works as a cookie. A session ends when it was not used for ``idle`` seconds, when
it is ``max_age`` seconds old, or when it is logged out (``revoke``), and then it is refused on
the next request.

``SqliteSessions`` keeps them in ``<data-dir>/dashboard-logins.sqlite3`` (one instance; they
survive a restart). ``dashboard.redis_sessions.RedisSessions`` keeps them in Redis keys with a
TTL, so every instance on that Redis sees a log-in, and a log-out, at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shared import sqlite
from shared.datadir import private_file

__all__ = ["LoginSession", "LoginSessions", "SqliteSessions", "session_key"]

MAX_AGE = 12 * 3600.0
IDLE = 12 * 3600.0
MAX_SECONDS = 365 * 24 * 3600.0


def session_key(secret: str) -> str:
    """What the store keeps of a cookie's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LoginSession:
    key: str  # session_key(the cookie's secret)
    token_fp: str  # which control token it was made with: a new token ends every old session
    created: float  # time.time()
    seen: float  # last use (updated at most every touch_every seconds)
    address: str  # who logged in, for the record

    @property
    def ref(self) -> str:
        """The short name of this session in the audit log and in ``command`` events."""
        return self.key[:12]


class LoginSessions(ABC):
    """Where login sessions live: ``add`` at log-in, ``get`` on each request, ``revoke`` at log-out."""

    def __init__(self, *, max_age: float = MAX_AGE, idle: float = IDLE) -> None:
        if not (0 < max_age <= MAX_SECONDS and 0 < idle <= MAX_SECONDS):
            raise ValueError(f"a login's max_age and idle time must be more than 0 and at most {MAX_SECONDS:g} s")
        self.max_age = max_age
        self.idle = idle

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open the file or connection (the app's startup)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release it (the app's shutdown)."""

    def expires_at(self, session: LoginSession) -> float:
        return min(session.created + self.max_age, session.seen + self.idle)

    @abstractmethod
    async def add(self, session: LoginSession) -> None:
        """Keep a new session (until it expires or is revoked)."""

    @abstractmethod
    async def get(self, key: str) -> LoginSession | None:
        """The live session with this key, its idle time restarted; ``None`` if there is none,
        it expired, or it was revoked."""

    @abstractmethod
    async def revoke(self, key: str) -> bool:
        """End the session now; whether there was one."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS logins (
    key TEXT PRIMARY KEY,
    token_fp TEXT NOT NULL,
    created REAL NOT NULL,
    seen REAL NOT NULL,
    address TEXT NOT NULL
)
"""


class SqliteSessions(LoginSessions):
    """In a SQLite file of their own (0600); queries run in a worker thread, one at a time."""

    def __init__(self, path: Path, *, max_age: float = MAX_AGE, idle: float = IDLE) -> None:
        super().__init__(max_age=max_age, idle=idle)
        self.path = path
        # Writing ``seen`` on every request would be a write per page action; once a minute (or a
        # tenth of the idle time, if shorter) is enough, at the cost of an expiry that much early.
        self.touch_every = min(60.0, idle / 10)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _open(self) -> None:
        db = sqlite.connect(private_file(self.path))
        db.execute(_SCHEMA)
        self._db = db
        self._prune(time.time())

    def _prune(self, now: float) -> None:
        assert self._db is not None
        self._db.execute("DELETE FROM logins WHERE created < ? OR seen < ?", (now - self.max_age, now - self.idle))

    async def start(self) -> None:
        await asyncio.to_thread(self._open)

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(close)

    async def _run(self, fn: Any, *args: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                if self._db is None:
                    raise RuntimeError("the login sessions are not open: await start() first")
                return fn(self._db, *args)

        return await asyncio.to_thread(locked)

    async def add(self, session: LoginSession) -> None:
        def add(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO logins (key, token_fp, created, seen, address) VALUES (?, ?, ?, ?, ?)",
                (session.key, session.token_fp, session.created, session.seen, session.address),
            )
            self._prune(time.time())

        await self._run(add)

    async def get(self, key: str) -> LoginSession | None:
        def get(db: sqlite3.Connection) -> LoginSession | None:
            row = db.execute("SELECT token_fp, created, seen, address FROM logins WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            found = LoginSession(key, str(row[0]), float(row[1]), float(row[2]), str(row[3]))
            now = time.time()
            if now >= self.expires_at(found):
                db.execute("DELETE FROM logins WHERE key = ?", (key,))
                return None
            if now - found.seen >= self.touch_every:
                db.execute("UPDATE logins SET seen = ? WHERE key = ?", (now, key))
                found = replace(found, seen=now)
            return found

        result: LoginSession | None = await self._run(get)
        return result

    async def revoke(self, key: str) -> bool:
        def revoke(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM logins WHERE key = ?", (key,)).rowcount > 0

        result: bool = await self._run(revoke)
        return result
