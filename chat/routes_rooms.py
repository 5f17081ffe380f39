"""``/chat/rooms``: the room list with unread counts, creating and deleting rooms, typing and read markers."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import ClientException
from litestar.params import FromPath, JSONBody

from shared.errors import errors

from .context import CurrentUser, chat_of
from .model import room_topic
from .ratelimit import Rate
from .rules import check_room_name

__all__ = ["handlers"]


class RoomBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class ReadBody(msgspec.Struct, forbid_unknown_fields=True):
    id: int


@get("/chat/rooms", raises=errors(401, 409, 503))
async def list_rooms(state: State, user: CurrentUser) -> dict[str, Any]:
    """Rooms, with the lobby's latest event id: connect ``/chat/events`` from there."""
    chat = chat_of(state)
    rooms, latest = await chat.store.rooms(user.id)
    return {"rooms": rooms, "latest_event_id": latest, "max_rooms": chat.settings.max_rooms}


@post("/chat/rooms", status_code=201, raises=errors(401, 403, 409, 413, 422, 429, 503))
async def create_room(
    request: Request[Any, Any, Any], state: State, user: CurrentUser, data: JSONBody[RoomBody]
) -> dict[str, Any]:
    chat = chat_of(state)
    name = check_room_name(data.name, chat.settings.max_room_name)
    await chat.spend(user, request)
    s = chat.settings
    rate = Rate("room_rate", s.room_rate, s.room_burst, "new rooms per person and per client address")
    await chat.take(rate, user.id)
    address = chat.address(request)
    await chat.take(rate, address)
    return await chat.store.create_room(name, user, address)


@delete("/chat/rooms/{room:str}", status_code=204, raises=errors(401, 403, 404, 409, 429, 503))
async def delete_room(request: Request[Any, Any, Any], state: State, user: CurrentUser, room: FromPath[str]) -> None:
    """Delete a room you created, once it is empty: no live message, nobody else in it. The
    default rooms are never deleted. Pages get ``room_deleted`` (lobby) and ``deleted`` (room)."""
    chat = chat_of(state)
    await chat.spend(user, request)
    await chat.store.require_room(room)
    others = [m for m in await chat.presence.members(room) if m["id"] != user.id]
    if others:
        raise ClientException(
            f"the room {room!r} has {len(others)} other people in it: only an empty room can be deleted",
            status_code=409,
        )
    await chat.store.delete_room(room, user)


@post("/chat/rooms/{room:str}/typing", status_code=204, raises=errors(401, 403, 404, 409, 503))
async def typing(state: State, user: CurrentUser, room: FromPath[str]) -> None:
    """Say "I am typing" (ephemeral: never stored, never replayed); extra calls are dropped."""
    chat = chat_of(state)
    await chat.store.require_room(room)
    if await chat.limits.typing(room, user.id):
        await chat.announce(room_topic(room), "typing", {"id": user.id, "name": user.name})


@post("/chat/rooms/{room:str}/read", status_code=204, raises=errors(401, 403, 404, 409, 413, 429, 503))
async def mark_read(
    request: Request[Any, Any, Any], state: State, user: CurrentUser, room: FromPath[str], data: JSONBody[ReadBody]
) -> None:
    """Everything up to message ``id`` has been seen (markers only move forward). A write to
    disk like any other, so it spends from the same rate limits (the page sends one a second at most)."""
    chat = chat_of(state)
    await chat.spend(user, request)
    await chat.store.mark_read(room, user.id, data.id)


handlers = [list_rooms, create_room, delete_room, typing, mark_read]
