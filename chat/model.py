"""What the chat stores, and the interface every store offers (SQLite or Redis).

A store keeps rooms, messages (with their edits, deletions and reactions), uploads' metadata
and read markers, and writes each change together with its event in the room's log, in one
step: a client that reads history and then resumes the stream from the id it got sees every
change exactly once, on either store.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from .session import User

__all__ = ["LOBBY", "MAX_ID", "SYSTEM", "ChatStore", "Message", "StoredFile", "dumps", "room_topic"]

LOBBY = "lobby"
SYSTEM = "system"
# Message ids are 64-bit integers; anything past this cannot be one of ours (and must not reach
# SQLite, whose driver would raise OverflowError: a 500).
MAX_ID = 2**62

Message = dict[str, Any]


def room_topic(room: str) -> str:
    return f"room:{room}"


def dumps(obj: Any) -> str:
    """JSON as the chat's events carry it: compact, UTF-8 kept as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class StoredFile:
    """An upload already stored, about to be attached to a message (or attached)."""

    id: str
    name: str
    content_type: str
    size: int
    image: bool


class ChatStore(ABC):
    """The chat's state. Every method is safe to call from request handlers concurrently; the
    ones that change something raise Litestar HTTP exceptions for what the user got wrong."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect (the app's startup calls it before the hub starts)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Disconnect (after the hub has ended every stream)."""

    @abstractmethod
    async def init(self) -> None:
        """Create the default rooms; make sure the lobby log has an event (pages need an id)."""

    @abstractmethod
    async def secret(self) -> bytes:
        """The key that signs session cookies, made once and shared by every instance."""

    @abstractmethod
    async def rooms(self, user_id: str) -> tuple[list[dict[str, Any]], str | None]:
        """Rooms (by name) with the user's unread counts, and the lobby's latest event id."""

    @abstractmethod
    async def require_room(self, name: str) -> None:
        """Nothing if the room exists; 404 if it does not."""

    @abstractmethod
    async def create_room(self, name: str, user: User) -> dict[str, Any]:
        """A new room (409 if the name is taken or there are ``max_rooms`` already)."""

    @abstractmethod
    async def find_sent(self, user_id: str, client_msg_id: str) -> Message | None:
        """The message this user already sent with this ``client_msg_id``, if any."""

    @abstractmethod
    async def post(
        self, room: str, user: User, text: str, client_msg_id: str, file: StoredFile | None = None
    ) -> tuple[Message, bool]:
        """Store a message, idempotent on the user's ``client_msg_id``: ``(message, created)``."""

    @abstractmethod
    async def edit(self, room: str, message_id: int, user: User, text: str) -> Message:
        """Change the text of the user's own message."""

    @abstractmethod
    async def delete(self, room: str, message_id: int, user: User) -> str | None:
        """Delete the user's own message; the id of its file, if the caller must remove it."""

    @abstractmethod
    async def react(self, room: str, message_id: int, user: User, emoji: str) -> Message:
        """Toggle ``user``'s ``emoji`` on a message."""

    @abstractmethod
    async def history(self, room: str, user_id: str, before: int | None, limit: int) -> dict[str, Any]:
        """A page of messages older than ``before`` (newest if ``None``), oldest first, with the
        room's latest event id as of the same moment: resume the stream from there."""

    @abstractmethod
    async def mark_read(self, room: str, user_id: str, message_id: int) -> None:
        """Everything up to ``message_id`` has been seen (markers only move forward)."""

    @abstractmethod
    async def start_reading(self, user_id: str) -> None:
        """A new person: what was said before they joined does not count as unread."""

    @abstractmethod
    async def file(self, file_id: str) -> StoredFile | None:
        """A downloadable file: one whose message still exists."""
