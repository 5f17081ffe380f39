"""A hub backend whose topics are rows of the chat database's ``events`` table.

The shared ``Hub`` does fan-out, heartbeats and shutdown; this backend answers "what came after
id X" straight from SQLite, so a client resumes however long it was away, across restarts too.

Ids are ``<db_id>-<seq>``: ``seq`` is the log's integer key (ordered across the whole file) and
``db_id`` is random per database file, so an id from another file is told apart ("foreign").

Writes that change chat state (a message and its event) happen in one transaction in
``SqliteStore``, which then calls :meth:`SqliteBackend.committed`. A listener never trusts what it
was woken with: it re-reads the log after its cursor, so it gets every committed event, in order,
whatever order the wake-ups came in. Ephemeral events (typing, presence) are not stored; each one
is slotted in after the stored events committed before it, so "typing" never trails the message
that ended it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

from shared.backends.base import Backend, Entry, UnknownEventId

from .db import Database

__all__ = ["SqliteBackend", "append_event", "latest_seq"]

_PAGE = 1000


def append_event(conn: sqlite3.Connection, topic: str, event: str | None, data: str) -> int:
    """Insert one event inside the caller's transaction; returns its seq."""
    cur = conn.execute(
        "INSERT INTO events (topic, event, data, created_at) VALUES (?, ?, ?, ?)", (topic, event, data, time.time())
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def latest_seq(conn: sqlite3.Connection, topic: str) -> int | None:
    row = conn.execute("SELECT MAX(seq) FROM events WHERE topic = ?", (topic,)).fetchone()
    return int(row[0]) if row[0] is not None else None


def _rows_after(conn: sqlite3.Connection, topic: str, seq: int, limit: int) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT seq, event, data FROM events WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?", (topic, seq, limit)
    ).fetchall()


@dataclass(slots=True, eq=False)
class _Listener:
    # (seq of the newest stored event committed before it, the ephemeral entry)
    ephemeral: list[tuple[int, Entry]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class SqliteBackend(Backend):
    """Topics in the chat database, kept for good (no retention): a resume replays everything
    after its id, a page of the hub's ``replay_limit`` events at a time."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._listeners: dict[str, set[_Listener]] = {}
        self._committed: dict[str, int] = {}  # topic -> newest seq known to be committed
        self._closed = False

    # -- ids ---------------------------------------------------------------------------------

    def format_id(self, seq: int) -> str:
        return f"{self.db.db_id}-{seq}"

    def order_key(self, event_id: str) -> tuple[int, ...]:
        db_id, sep, seq = event_id.partition("-")
        if not sep or db_id != self.db.db_id or not seq.isdigit() or len(seq) > 18:
            raise ValueError(f"not an id of this chat database: {event_id[:80]!r}")
        return (int(seq),)

    def _seq(self, event_id: str) -> int:
        try:
            return self.order_key(event_id)[0]
        except ValueError:
            db_id, sep, seq = event_id.partition("-")
            foreign = bool(sep) and seq.isdigit() and len(db_id) == len(self.db.db_id) and db_id.isalnum()
            raise UnknownEventId(event_id, "foreign" if foreign else "unknown") from None

    # -- the Backend contract ----------------------------------------------------------------

    async def start(self) -> None:
        # The database is opened (and closed) by the app, around the hub: requests still in flight
        # during shutdown must be able to finish their writes after the streams have ended.
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.wake.set()

    async def append(self, topic: str, data: str, event: str | None = None, *, ephemeral: bool = False) -> Entry:
        if ephemeral:
            entry = Entry(None, event, data)
            after = self._committed.get(topic, 0)
            for listener in self._listeners.get(topic, ()):
                listener.ephemeral.append((after, entry))
                listener.wake.set()
            return entry
        seq = await self.db.write(lambda conn: append_event(conn, topic, event, data))
        self.committed(topic, seq)
        return Entry(self.format_id(seq), event, data)

    def committed(self, topic: str, seq: int) -> None:
        """Event ``seq`` of ``topic`` is committed: listeners go and read the log."""
        if seq > self._committed.get(topic, 0):
            self._committed[topic] = seq
        for listener in self._listeners.get(topic, ()):
            listener.wake.set()

    async def read_after(self, topic: str, event_id: str, limit: int) -> list[Entry]:
        seq = self._seq(event_id)

        def read(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], int]:
            newest = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
            return _rows_after(conn, topic, seq, limit), int(newest)

        rows, newest = await self.db.read(read)
        if seq > newest:
            raise UnknownEventId(event_id, "unknown")  # from this file's future: not ours after all
        # The first ``limit`` (the backend contract): a client further behind gets the rest in
        # the hub's next pages, never a silent gap.
        return [self._entry(row) for row in rows]

    async def latest_id(self, topic: str) -> str | None:
        seq = await self.db.read(lambda conn: latest_seq(conn, topic))
        return None if seq is None else self.format_id(seq)

    async def origin_id(self, topic: str) -> str:
        return self.format_id(0)  # seqs start at 1

    async def listen(self, topic: str, after: str | None) -> AsyncIterator[list[Entry]]:
        cursor = self._seq(after) if after is not None else 0
        listener = _Listener()
        self._listeners.setdefault(topic, set()).add(listener)
        try:
            while True:
                listener.wake.clear()  # before reading: a wake-up during the read is not lost
                stored: list[sqlite3.Row] = []
                while True:
                    rows = await self.db.read(partial(_rows_after, topic=topic, seq=cursor, limit=_PAGE))
                    stored.extend(rows)
                    if rows:
                        cursor = rows[-1]["seq"]
                    if len(rows) < _PAGE:
                        break
                pending, listener.ephemeral = listener.ephemeral, []
                batch = self._merge(stored, pending)
                if batch:
                    yield batch
                if self._closed:
                    return
                await listener.wake.wait()
        finally:
            listeners = self._listeners.get(topic)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[topic]

    def _entry(self, row: sqlite3.Row) -> Entry:
        return Entry(self.format_id(row["seq"]), row["event"], row["data"])

    def _merge(self, stored: list[sqlite3.Row], ephemeral: list[tuple[int, Entry]]) -> list[Entry]:
        """Stored rows in log order, each ephemeral entry after the rows committed before it."""
        out: list[Entry] = []
        i = 0
        for row in stored:
            while i < len(ephemeral) and ephemeral[i][0] < row["seq"]:
                out.append(ephemeral[i][1])
                i += 1
            out.append(self._entry(row))
        out.extend(entry for _, entry in ephemeral[i:])
        return out
