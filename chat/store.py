"""The SQLite store: rooms, messages, edits, reactions, files, read markers in one file.

Every change is ONE transaction that updates the tables and appends the matching event to the
room's log (``events``), so the log and the tables never disagree: a client that loads history
and then resumes the stream from the id read in the same snapshot sees every change exactly
once. After the commit the backend is woken so live streams pick the event up.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from litestar.exceptions import ClientException, NotFoundException, PermissionDeniedException

from . import rules
from .backend import SqliteBackend, append_event, latest_seq
from .db import Database
from .model import (
    LOBBY,
    MAX_ID,
    SYSTEM,
    ChatStore,
    Message,
    StoredFile,
    check_deletable,
    dumps,
    not_empty,
    room_topic,
    rooms_check,
    rooms_full,
)
from .session import User, load_or_create_key
from .settings import ChatSettings

__all__ = ["LOBBY", "SqliteStore", "StoredFile", "room_topic"]

T = TypeVar("T")


class _Log:
    """The events one transaction appends; the backend hears of them once it has committed."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.appended: list[tuple[str, int]] = []

    def add(self, topic: str, event: str, obj: Any) -> None:
        self.appended.append((topic, append_event(self.conn, topic, event, dumps(obj))))


_MESSAGE_SQL = """
SELECT m.*, r.name AS room, f.name AS f_name, f.content_type AS f_type, f.size AS f_size, f.image AS f_image
FROM messages m JOIN rooms r ON r.id = m.room_id LEFT JOIN files f ON f.id = m.file_id
"""


def _reactions(conn: sqlite3.Connection, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Per message: ``[{"emoji", "users": [{"id", "name"}]}]``, emoji in order of first use."""
    out: dict[int, dict[str, list[dict[str, str]]]] = {}
    for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT message_id, emoji, user_id, user_name FROM reactions WHERE message_id IN ({marks})"
            " ORDER BY created_at, rowid",
            chunk,
        )
        for row in rows:
            users = out.setdefault(row["message_id"], {}).setdefault(row["emoji"], [])
            users.append({"id": row["user_id"], "name": row["user_name"]})
    return {mid: [{"emoji": e, "users": u} for e, u in by.items()] for mid, by in out.items()}


def _to_message(row: sqlite3.Row, reactions: list[dict[str, Any]]) -> Message:
    file = None
    if row["file_id"] is not None:
        file = {
            "id": row["file_id"],
            "name": row["f_name"],
            "type": row["f_type"],
            "size": row["f_size"],
            "image": bool(row["f_image"]),
            "url": f"/chat/files/{row['file_id']}/{quote(row['f_name'])}",
        }
    return {
        "id": row["id"],
        "room": row["room"],
        "author_id": row["author_id"],
        "author": row["author"],
        "text": row["text"],
        "client_msg_id": row["client_msg_id"],
        "ts": row["created_at"],
        "edited_at": row["edited_at"],
        "version": row["version"],
        "deleted": bool(row["deleted"]),
        "mentions": rules.mentions(row["text"]),
        "reactions": reactions,
        "file": file,
    }


def _load(conn: sqlite3.Connection, message_id: int) -> Message:
    row = conn.execute(_MESSAGE_SQL + " WHERE m.id = ?", (message_id,)).fetchone()
    return _to_message(row, _reactions(conn, [message_id]).get(message_id, []))


class SqliteStore(ChatStore):
    """The chat's state in one SQLite file; the session key in a file next to it."""

    def __init__(self, db: Database, backend: SqliteBackend, settings: ChatSettings, key_file: Path) -> None:
        self.db = db
        self.backend = backend
        self.settings = settings
        self.key_file = key_file
        self._room_ids: dict[str, int] = {}  # dropped for a room when it is deleted

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def secret(self) -> bytes:
        return await asyncio.to_thread(load_or_create_key, self.key_file)

    async def _change(self, fn: Callable[[_Log], T]) -> T:
        """Run ``fn`` in a write transaction; after the commit, wake the topics it appended to."""

        def tx(conn: sqlite3.Connection) -> tuple[T, list[tuple[str, int]]]:
            log = _Log(conn)
            return fn(log), log.appended

        result, appended = await self.db.write(tx)
        for topic, seq in appended:
            self.backend.committed(topic, seq)
        return result

    async def init(self) -> None:
        """Create the default rooms; make sure the lobby log is not empty (so pages get an id)."""

        def tx(log: _Log) -> None:
            for name in self.settings.default_rooms:
                if log.conn.execute("SELECT 1 FROM rooms WHERE name = ?", (name,)).fetchone() is None:
                    self._create_room(log, name, SYSTEM)
            if latest_seq(log.conn, LOBBY) is None:
                log.add(LOBBY, "hello", {"created_at": time.time()})

        await self._change(tx)

    # -- rooms -------------------------------------------------------------------------------

    async def rooms(self, user_id: str) -> tuple[list[dict[str, Any]], str | None]:
        """Rooms with the user's unread counts, and the lobby's latest event id (same snapshot)."""

        def tx(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], int | None]:
            rows = conn.execute(
                """
                SELECT r.name, r.created_by, r.creator_id AS created_by_id, r.created_at,
                  (SELECT COUNT(*) FROM messages m
                    WHERE m.room_id = r.id AND m.deleted = 0 AND m.author_id != :uid
                      AND m.id > COALESCE((SELECT last_read FROM reads WHERE user_id = :uid AND room_id = r.id), 0)
                  ) AS unread
                FROM rooms r ORDER BY r.name
                """,
                {"uid": user_id},
            ).fetchall()
            return [dict(row) for row in rows], latest_seq(conn, LOBBY)

        rooms, seq = await self.db.read(tx)
        return rooms, None if seq is None else self.backend.format_id(seq)

    async def room_id(self, name: str) -> int:
        """The room's row id; 404 if there is no such room."""
        room_id = self._room_ids.get(name)
        if room_id is None:
            row = await self.db.read(lambda c: c.execute("SELECT id FROM rooms WHERE name = ?", (name,)).fetchone())
            if row is None:
                raise NotFoundException(f"no room named {name[:40]!r}: create it with POST /chat/rooms")
            room_id = self._room_ids[name] = int(row[0])
        return room_id

    async def require_room(self, name: str) -> None:
        await self.room_id(name)

    async def create_room(self, name: str, user: User, address: str | None = None) -> dict[str, Any]:
        s = self.settings
        dropped: list[str] = []

        def tx(log: _Log) -> dict[str, Any]:
            conn = log.conn
            if conn.execute("SELECT 1 FROM rooms WHERE name = ?", (name,)).fetchone() is not None:
                raise ClientException(f"a room named {name!r} already exists", status_code=409)
            mine = conn.execute("SELECT COUNT(*) FROM rooms WHERE creator_id = ?", (user.id,)).fetchone()[0]
            theirs = 0
            if address:
                theirs = conn.execute("SELECT COUNT(*) FROM rooms WHERE creator_addr = ?", (address,)).fetchone()[0]
            rooms_check(s, mine, theirs)
            count = conn.execute("SELECT COUNT(*) FROM rooms").fetchone()[0]
            if count >= s.max_rooms:
                victim = None if mine or theirs else _reclaimable(conn)
                if victim is None:
                    raise rooms_full(count, s.max_rooms)
                self._drop_room(log, victim, "reclaimed")
                dropped.append(victim)
            return self._create_room(log, name, user.name, user.id, address or "")

        try:
            return await self._change(tx)
        finally:
            for victim in dropped:
                self._room_ids.pop(victim, None)

    async def delete_room(self, name: str, user: User) -> None:
        def tx(log: _Log) -> None:
            row = log.conn.execute("SELECT id, creator_id FROM rooms WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFoundException(f"no room named {name[:40]!r}")
            check_deletable(self.settings, name, row["creator_id"], user)
            live = log.conn.execute(
                "SELECT COUNT(*) FROM messages WHERE room_id = ? AND deleted = 0", (row["id"],)
            ).fetchone()[0]
            if live:
                raise not_empty(name, live)
            self._drop_room(log, name, "deleted")

        try:
            await self._change(tx)
        finally:
            self._room_ids.pop(name, None)

    async def expire_rooms(self, idle: float) -> list[str]:
        cutoff = time.time() - idle

        def tx(log: _Log) -> list[str]:
            rows = log.conn.execute(
                _EMPTY_ROOMS
                + " AND COALESCE((SELECT MAX(e.created_at) FROM events e WHERE e.topic = 'room:' || r.name),"
                " r.created_at) < ?",
                (cutoff,),
            ).fetchall()
            for row in rows:
                self._drop_room(log, row["name"], "expired")
            return [row["name"] for row in rows]

        names = await self._change(tx)
        for name in names:
            self._room_ids.pop(name, None)
        return names

    @staticmethod
    def _drop_room(log: _Log, name: str, why: str) -> None:
        """Remove a room that has no live messages; its log records that it is gone."""
        conn = log.conn
        room_id = conn.execute("SELECT id FROM rooms WHERE name = ?", (name,)).fetchone()[0]
        # Only deleted messages are left (their files went with them): rows, not content.
        conn.execute(
            "DELETE FROM reactions WHERE message_id IN (SELECT id FROM messages WHERE room_id = ?)", (room_id,)
        )
        conn.execute("DELETE FROM messages WHERE room_id = ?", (room_id,))
        conn.execute("DELETE FROM files WHERE room_id = ?", (room_id,))
        conn.execute("DELETE FROM reads WHERE room_id = ?", (room_id,))
        conn.execute("DELETE FROM rooms WHERE id = ?", (room_id,))
        log.add(LOBBY, "room_deleted", {"name": name, "reason": why})
        log.add(room_topic(name), "deleted", {"room": name, "reason": why})

    @staticmethod
    def _create_room(log: _Log, name: str, by: str, by_id: str = "", address: str = "") -> dict[str, Any]:
        now = time.time()
        log.conn.execute(
            "INSERT INTO rooms (name, created_by, created_at, creator_id, creator_addr) VALUES (?, ?, ?, ?, ?)",
            (name, by, now, by_id, address),
        )
        room = {"name": name, "created_by": by, "created_by_id": by_id, "created_at": now, "unread": 0}
        log.add(LOBBY, "room", room)
        # Every room's log starts with an event, so a first page always comes with an id to
        # resume from: no gap between reading history and connecting the stream.
        log.add(room_topic(name), "created", {"room": name, "by": by, "ts": now})
        return room

    # -- messages ----------------------------------------------------------------------------

    async def find_sent(self, user_id: str, client_msg_id: str) -> Message | None:
        """The message this user already sent with this ``client_msg_id``, if any."""

        def tx(conn: sqlite3.Connection) -> Message | None:
            row = conn.execute(
                "SELECT id FROM messages WHERE author_id = ? AND client_msg_id = ?", (user_id, client_msg_id)
            ).fetchone()
            return None if row is None else _load(conn, row[0])

        return await self.db.read(tx)

    async def post(
        self, room: str, user: User, text: str, client_msg_id: str, file: StoredFile | None = None
    ) -> tuple[Message, bool]:
        """Store a message (idempotent on the user's ``client_msg_id``); ``(message, created)``:
        a message already stored under that id is returned as is, with ``created`` false."""
        room_id = await self.room_id(room)

        def tx(log: _Log) -> tuple[Message, bool]:
            conn = log.conn
            row = conn.execute(
                "SELECT id FROM messages WHERE author_id = ? AND client_msg_id = ?", (user.id, client_msg_id)
            ).fetchone()
            if row is not None:
                return _load(conn, row[0]), False  # the caller checks it is the same send
            now = time.time()
            if file is not None:
                conn.execute(
                    "INSERT INTO files (id, room_id, uploader_id, name, content_type, size, image, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (file.id, room_id, user.id, file.name, file.content_type, file.size, int(file.image), now),
                )
            cur = conn.execute(
                "INSERT INTO messages (room_id, author_id, author, client_msg_id, text, file_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (room_id, user.id, user.name, client_msg_id, text, file.id if file else None, now),
            )
            assert cur.lastrowid is not None
            message = _load(conn, cur.lastrowid)
            log.add(room_topic(room), "message", message)
            # Writing in a room means having read it.
            _mark_read(conn, user.id, room_id, message["id"])
            return message, True

        return await self._change(tx)

    async def edit(self, room: str, message_id: int, user: User, text: str) -> Message:
        room_id = await self.room_id(room)

        def tx(log: _Log) -> Message:
            conn = log.conn
            row = _own_live_message(conn, room_id, message_id, user, "edit")
            if row["text"] == text:
                return _load(conn, message_id)
            conn.execute(
                "UPDATE messages SET text = ?, edited_at = ?, version = version + 1 WHERE id = ?",
                (text, time.time(), message_id),
            )
            message = _load(conn, message_id)
            patch = {k: message[k] for k in ("id", "text", "mentions", "edited_at", "version")}
            log.add(room_topic(room), "edit", patch)
            return message

        return await self._change(tx)

    async def delete(self, room: str, message_id: int, user: User) -> str | None:
        """Delete the user's message; returns the id of its file, if it had one (to remove)."""
        room_id = await self.room_id(room)

        def tx(log: _Log) -> str | None:
            conn = log.conn
            row = _own_live_message(conn, room_id, message_id, user, "delete")
            conn.execute("DELETE FROM reactions WHERE message_id = ?", (message_id,))
            conn.execute(
                "UPDATE messages SET deleted = 1, text = '', version = version + 1 WHERE id = ?", (message_id,)
            )
            patch = {"id": message_id, "version": row["version"] + 1}
            log.add(room_topic(room), "delete", patch)
            return str(row["file_id"]) if row["file_id"] is not None else None

        return await self._change(tx)

    async def react(self, room: str, message_id: int, user: User, emoji: str) -> Message:
        """Toggle ``user``'s ``emoji`` on a message."""
        room_id = await self.room_id(room)
        limit = self.settings.max_reactions

        def tx(log: _Log) -> Message:
            conn = log.conn
            _live_message(conn, room_id, message_id)
            key = (message_id, emoji, user.id)
            gone = conn.execute("DELETE FROM reactions WHERE message_id = ? AND emoji = ? AND user_id = ?", key)
            if gone.rowcount == 0:
                kinds = conn.execute(
                    "SELECT COUNT(DISTINCT emoji), SUM(emoji = ?) FROM reactions WHERE message_id = ?",
                    (emoji, message_id),
                ).fetchone()
                if kinds[0] >= limit and not kinds[1]:
                    raise ClientException(f"a message can have at most {limit} different emoji", status_code=409)
                conn.execute(
                    "INSERT INTO reactions (message_id, emoji, user_id, user_name, created_at) VALUES (?, ?, ?, ?, ?)",
                    (*key, user.name, time.time()),
                )
            conn.execute("UPDATE messages SET version = version + 1 WHERE id = ?", (message_id,))
            message = _load(conn, message_id)
            patch = {k: message[k] for k in ("id", "reactions", "version")}
            log.add(room_topic(room), "reaction", patch)
            return message

        return await self._change(tx)

    async def history(self, room: str, user_id: str, before: int | None, limit: int) -> dict[str, Any]:
        """A page of messages older than ``before`` (newest page if ``None``), oldest first, with
        the room's latest event id read in the same snapshot: resume the stream from there."""
        room_id = await self.room_id(room)

        def tx(conn: sqlite3.Connection) -> dict[str, Any]:
            rows = conn.execute(
                _MESSAGE_SQL + " WHERE m.room_id = ? AND m.deleted = 0 AND m.id < ? ORDER BY m.id DESC LIMIT ?",
                (room_id, min(before, MAX_ID) if before is not None else MAX_ID, limit + 1),
            ).fetchall()
            has_more = len(rows) > limit
            rows = rows[:limit][::-1]
            reactions = _reactions(conn, [row["id"] for row in rows])
            seq = latest_seq(conn, room_topic(room))
            read = conn.execute(
                "SELECT last_read FROM reads WHERE user_id = ? AND room_id = ?", (user_id, room_id)
            ).fetchone()
            return {
                "room": room,
                "messages": [_to_message(row, reactions.get(row["id"], [])) for row in rows],
                "has_more": has_more,
                "latest_event_id": None if seq is None else self.backend.format_id(seq),
                "last_read": read[0] if read else 0,
            }

        return await self.db.read(tx)

    async def mark_read(self, room: str, user_id: str, message_id: int) -> None:
        room_id = await self.room_id(room)
        message_id = max(0, min(message_id, MAX_ID))
        await self.db.write(lambda conn: _mark_read(conn, user_id, room_id, message_id))

    async def start_reading(self, user_id: str) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT OR IGNORE INTO reads (user_id, room_id, last_read)"
                " SELECT ?, id, (SELECT COALESCE(MAX(id), 0) FROM messages) FROM rooms",
                (user_id,),
            )
        )

    async def file(self, file_id: str) -> StoredFile | None:
        def tx(conn: sqlite3.Connection) -> StoredFile | None:
            row = conn.execute(
                "SELECT f.* FROM files f JOIN messages m ON m.file_id = f.id WHERE f.id = ? AND m.deleted = 0",
                (file_id,),
            ).fetchone()
            if row is None:
                return None
            return StoredFile(row["id"], row["name"], row["content_type"], row["size"], bool(row["image"]))

        return await self.db.read(tx)


# User-made rooms (the default ones have no creator) without a live message.
_EMPTY_ROOMS = """
SELECT r.name FROM rooms r WHERE r.creator_id != ''
  AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.room_id = r.id AND m.deleted = 0)
"""


def _reclaimable(conn: sqlite3.Connection) -> str | None:
    """The room to give up when every slot is taken: an empty one of the client that holds the
    most rooms (by address, else by person), the one idle longest among those."""
    row = conn.execute(
        f"""
        WITH held AS (
          SELECT CASE WHEN creator_addr != '' THEN 'a:' || creator_addr ELSE 'u:' || creator_id END AS holder,
                 COUNT(*) AS n
          FROM rooms WHERE creator_id != '' GROUP BY holder
        )
        SELECT e.name FROM ({_EMPTY_ROOMS}) e JOIN rooms r ON r.name = e.name
        JOIN held h
          ON h.holder = CASE WHEN r.creator_addr != '' THEN 'a:' || r.creator_addr ELSE 'u:' || r.creator_id END
        ORDER BY h.n DESC,
          COALESCE((SELECT MAX(ev.created_at) FROM events ev WHERE ev.topic = 'room:' || r.name), r.created_at) ASC
        LIMIT 1
        """
    ).fetchone()
    return None if row is None else str(row[0])


def _mark_read(conn: sqlite3.Connection, user_id: str, room_id: int, message_id: int) -> None:
    conn.execute(
        "INSERT INTO reads (user_id, room_id, last_read) VALUES (?, ?, ?)"
        " ON CONFLICT (user_id, room_id) DO UPDATE SET last_read = MAX(last_read, excluded.last_read)",
        (user_id, room_id, message_id),
    )


def _live_message(conn: sqlite3.Connection, room_id: int, message_id: int) -> sqlite3.Row:
    if not 0 < message_id < MAX_ID:
        raise NotFoundException(f"no message {message_id} in this room")
    row = conn.execute(
        "SELECT * FROM messages WHERE id = ? AND room_id = ? AND deleted = 0", (message_id, room_id)
    ).fetchone()
    if row is None:
        raise NotFoundException(f"no message {message_id} in this room (it may have been deleted)")
    return row  # type: ignore[no-any-return]


def _own_live_message(conn: sqlite3.Connection, room_id: int, message_id: int, user: User, what: str) -> sqlite3.Row:
    row = _live_message(conn, room_id, message_id)
    if row["author_id"] != user.id:
        raise PermissionDeniedException(f"you can only {what} your own messages")
    return row
