"""The audit log: who did what to which target, with what result, when. One SQLite file (0600).

``asked_by`` is ``bearer`` or ``login <id>``, ``confirmed_by`` ``login <id>, page <client id>``;
a login's id is the first 12 hex digits of the SHA-256 of its cookie, never the cookie itself.

Writes are rare (a person acting), so one connection guarded by a lock, used from worker threads
(``asyncio.to_thread``), is plenty; WAL lets a reader look while a write is in progress.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared import sqlite
from shared.datadir import private_file

__all__ = ["AuditLog", "AuditRecord"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    command_id TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    params TEXT NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL,
    asked_by TEXT,
    confirmed_by TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
"""
# Added by issue 14.1; a log written before has them added (empty for its old rows).
_ADDED = ("asked_by", "confirmed_by")
_COLS = ("id", "at", "command_id", "who", "action", "target", "params", "result", "detail", *_ADDED)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    command_id: str
    who: str
    action: str
    target: str | None
    params: dict[str, Any]
    result: str  # succeeded | failed | refused | declined | unanswered
    detail: str
    at: float = 0.0
    asked_by: str | None = None
    confirmed_by: str | None = None


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        private_file(self.path)  # 0600: who did what to which process is not for every local user
        db = sqlite.connect(self.path)
        db.executescript(_SCHEMA)
        have = {row[1] for row in db.execute("PRAGMA table_info(audit)")}
        for column in _ADDED:
            if column not in have:
                db.execute(f"ALTER TABLE audit ADD COLUMN {column} TEXT")
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def start(self) -> None:
        await asyncio.to_thread(self.open)

    async def stop(self) -> None:
        await asyncio.to_thread(self.close)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the audit log is not open: call open() (or await start()) first")
        return self._db

    def write(self, rec: AuditRecord) -> int:
        with self._lock:
            if self._db is None:
                # Only at shutdown: a command interrupted after the log closed. Say so, loudly.
                log.warning("audit log closed; not recorded: %r", rec)
                return 0
            cur = self._db.execute(
                f"INSERT INTO audit ({', '.join(_COLS[1:])}) VALUES ({', '.join('?' * (len(_COLS) - 1))})",
                (
                    rec.at or time.time(),
                    rec.command_id,
                    rec.who,
                    rec.action,
                    rec.target,
                    json.dumps(rec.params, separators=(",", ":")),
                    rec.result,
                    rec.detail,
                    rec.asked_by,
                    rec.confirmed_by,
                ),
            )
            return int(cur.lastrowid or 0)

    def recent(self, limit: int = 100, before: int | None = None) -> list[dict[str, Any]]:
        """Newest first; ``before`` (a row id) pages further back."""
        sql = f"SELECT {', '.join(_COLS)} FROM audit"
        args: list[Any] = []
        if before is not None:
            sql += " WHERE id < ?"
            args.append(before)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._conn().execute(sql, args).fetchall()
        out = []
        for row in rows:
            item = dict(zip(_COLS, row, strict=True))
            item["params"] = json.loads(item["params"])
            out.append(item)
        return out

    async def awrite(self, rec: AuditRecord) -> int:
        return await asyncio.to_thread(self.write, rec)

    async def arecent(self, limit: int = 100, before: int | None = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.recent, limit, before)
