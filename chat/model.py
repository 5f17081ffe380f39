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

from litestar.exceptions import ClientException, PermissionDeniedException

from .session import User
from .settings import ChatSettings

__all__ = [
    "LOBBY",
    "MAX_ID",
    "SYSTEM",
    "ChatStore",
    "Message",
    "StoredFile",
    "check_deletable",
    "dumps",
    "not_empty",
    "room_topic",
    "rooms_check",
    "rooms_full",
]

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


# -- the rules about rooms both stores apply (issue 14.4) ---------------------------------------


def _refused(status: int, detail: str, limit_name: str, limit: int) -> ClientException:
    return ClientException(detail, status_code=status, extra={"limit_name": limit_name, "limit": limit})


def rooms_check(settings: ChatSettings, mine: int, theirs: int) -> None:
    """409 if the person (``mine`` rooms) or their address (``theirs``) holds all it may."""
    if mine >= settings.max_rooms_per_person:
        raise _refused(
            409,
            f"you have made {mine} rooms, the limit is {settings.max_rooms_per_person} per person: "
            "delete one of yours (an empty one) first",
            "max_rooms_per_person",
            settings.max_rooms_per_person,
        )
    if theirs >= settings.max_rooms_per_address:
        raise _refused(
            409,
            f"{theirs} rooms were made from your address, the limit is {settings.max_rooms_per_address} "
            "per client address: delete an empty one first",
            "max_rooms_per_address",
            settings.max_rooms_per_address,
        )


def rooms_full(count: int, limit: int) -> ClientException:
    return _refused(
        409,
        f"there are already {count} rooms, the limit is {limit}, and none can be reclaimed (every room has messages)",
        "max_rooms",
        limit,
    )


def check_deletable(settings: ChatSettings, name: str, creator_id: str, user: User) -> None:
    """403 unless ``user`` made the room (the default rooms are nobody's: never deleted)."""
    if not creator_id or name in settings.default_rooms:
        raise PermissionDeniedException(f"the room {name!r} is one of the default rooms: it cannot be deleted")
    if creator_id != user.id:
        raise PermissionDeniedException(f"only the person who created the room {name!r} can delete it")


def not_empty(name: str, live: int) -> ClientException:
    return ClientException(f"the room {name!r} has {live} messages: only an empty room can be deleted", status_code=409)


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
    async def create_room(self, name: str, user: User, address: str | None = None) -> dict[str, Any]:
        """A new room made by ``user`` from ``address`` (``None``: not counted per address).

        409 if the name is taken, if the person or the address holds its share of rooms
        (:func:`rooms_check`), or if all ``max_rooms`` are taken and none can be reclaimed: a
        client that holds no room reclaims the empty room (no live message) of the client that
        holds the most, idle longest (its pages get ``room_deleted``)."""

    @abstractmethod
    async def delete_room(self, name: str, user: User) -> None:
        """Delete a room ``user`` made that has no live message (404, 403 not theirs, 409 not empty).
        The lobby gets ``room_deleted``, the room's stream ``deleted``."""

    @abstractmethod
    async def expire_rooms(self, idle: float) -> list[str]:
        """Delete the user-made rooms with no live message and nothing new for ``idle`` seconds."""

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
