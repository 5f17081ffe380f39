"""The SQLite file: schema, and running queries off the event loop.

One writer thread with its own connection does every write, so writes are serialised without
lock contention and the event log's ids are handed out in commit order (the stream relies on
that: "everything up to id N" is a prefix once N is committed). One reader thread with a second
connection answers reads; in WAL mode it reads a consistent snapshot while a write goes on.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from shared import sqlite
from shared.datadir import private_file

__all__ = ["Database"]

T = TypeVar("T")

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- The log of every room (topic "room:<name>") and of the room list (topic "lobby").
-- AUTOINCREMENT: a seq is never reused, even after rows are deleted, so an old id never
-- points at a different event.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    event TEXT,
    data TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX events_topic ON events (topic, seq);
CREATE TABLE rooms (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    -- Who made it (user id and client address, '' for the default rooms): the per-client room
    -- caps count these, and only the creator may delete the room (issue 14.4).
    creator_id TEXT NOT NULL DEFAULT '',
    creator_addr TEXT NOT NULL DEFAULT ''
);
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    room_id INTEGER NOT NULL REFERENCES rooms (id),
    uploader_id TEXT NOT NULL,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    image INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id INTEGER NOT NULL REFERENCES rooms (id),
    author_id TEXT NOT NULL,
    author TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    text TEXT NOT NULL,
    file_id TEXT REFERENCES files (id),
    created_at REAL NOT NULL,
    edited_at REAL,
    deleted INTEGER NOT NULL DEFAULT 0,
    -- Bumped by every edit, deletion and reaction: clients keep the newest copy.
    version INTEGER NOT NULL DEFAULT 1,
    -- The idempotency key: a retried send finds the message it already made.
    UNIQUE (author_id, client_msg_id)
);
CREATE INDEX messages_room ON messages (room_id, id);
CREATE TABLE reactions (
    message_id INTEGER NOT NULL REFERENCES messages (id),
    emoji TEXT NOT NULL,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
);
CREATE TABLE reads (
    user_id TEXT NOT NULL,
    room_id INTEGER NOT NULL REFERENCES rooms (id),
    last_read INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
"""

# Schema version -> the statements that bring the version before it up to it.
MIGRATIONS = {
    2: [
        "ALTER TABLE rooms ADD COLUMN creator_id TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE rooms ADD COLUMN creator_addr TEXT NOT NULL DEFAULT ''",
    ],
}

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a read is one snapshot.
    # FULL: a message is on disk before its 201 goes out, power cut included.
    conn = sqlite.connect(path, synchronous="FULL", rows=True)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class Database:
    """``await db.write(fn)`` / ``await db.read(fn)``: ``fn(conn)`` runs in one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db_id = ""  # random per database file; event ids carry it
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None

    async def open(self) -> None:
        if self._writer is not None:
            return
        private_file(self.path)  # 0600, before SQLite makes it (its -wal and -shm follow)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="chat-db-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="chat-db-read")
        loop = asyncio.get_running_loop()
        self._wconn = await loop.run_in_executor(self._writer, self._open_writer)
        self._rconn = await loop.run_in_executor(self._reader, _connect, self.path)

    def _open_writer(self) -> sqlite3.Connection:
        conn = _connect(self.path)
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                # One statement at a time: executescript() would commit our transaction first.
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                db_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
                conn.execute("INSERT INTO meta (key, value) VALUES ('db_id', ?)", (db_id,))
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version < SCHEMA_VERSION:
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[step]:
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {version}, this code knows {SCHEMA_VERSION}: "
                    "use a matching version of the app or another --data-dir"
                )
            self.db_id = conn.execute("SELECT value FROM meta WHERE key = 'db_id'").fetchone()[0]
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        for pool, conn in ((self._writer, self._wconn), (self._reader, self._rconn)):
            if pool is not None and conn is not None:
                await asyncio.get_running_loop().run_in_executor(pool, conn.close)
            if pool is not None:
                pool.shutdown(wait=True)
        self._writer = self._reader = None
        self._wconn = self._rconn = None

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction (committed if it returns, rolled back if it raises)."""
        if self._writer is None or self._wconn is None:
            raise RuntimeError("the chat database is not open: call `await db.open()` (the app's on_startup does)")
        return await asyncio.get_running_loop().run_in_executor(self._writer, _transaction, self._wconn, fn, True)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a read transaction: everything it reads is one consistent snapshot."""
        if self._reader is None or self._rconn is None:
            raise RuntimeError("the chat database is not open: call `await db.open()` (the app's on_startup does)")
        return await asyncio.get_running_loop().run_in_executor(self._reader, _transaction, self._rconn, fn, False)


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
    # IMMEDIATE takes the write lock up front, so a read-then-write never fails half way.
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
