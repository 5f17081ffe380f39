"""The event streams: one per room (messages, edits, presence, typing) and the lobby (room list).

Both resume from ``Last-Event-ID`` straight from the store's log (the SQLite file, or the Redis
stream on any instance). A room stream also keeps its reader "in" the room for presence, and
opens with a ``presence`` snapshot (no id: it describes now, and is sent again on every
reconnect).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Stream

from shared.backends import BackendUnavailable
from shared.encoding import encode_json
from shared.errors import errors
from shared.responses import last_event_id, sse_response

from .context import CurrentUser, chat_of
from .model import LOBBY, room_topic
from .redis_conn import UNAVAILABLE

__all__ = ["handlers"]


@get("/chat/rooms/{room:str}/events", media_type="text/event-stream", raises=errors(401, 404, 409, 429, 503))
async def room_events(request: Request[Any, Any, Any], state: State, user: CurrentUser, room: FromPath[str]) -> Stream:
    """Messages, edits, deletions and reactions (stored, resumable), presence and typing (live).

    409 if the room is full (``max_room_members``): refused before the stream starts."""
    chat = chat_of(state)
    await chat.store.require_room(room)  # 404 before any stream starts
    await chat.presence.admit(room, user, chat.address(request))
    entered = False

    async def prelude() -> bytes:
        nonlocal entered
        chat.presence.enter(room, user)
        entered = True
        try:
            members = await chat.presence.members(room)
        except UNAVAILABLE as exc:  # Redis went away just now: the stream ends, the client comes back
            raise BackendUnavailable(str(exc)) from exc
        return encode_json({"members": members}, event="presence")

    async def on_close() -> None:
        # Runs while the stream's task is cancelled (client gone): no awaiting in here.
        if entered:
            chat.presence.exit(room, user.id)

    return sse_response(chat.hub, room_topic(room), last_id=last_event_id(request), prelude=prelude, on_close=on_close)


@get("/chat/events", media_type="text/event-stream", raises=errors(401, 409, 429, 503))
async def lobby_events(request: Request[Any, Any, Any], state: State, user: CurrentUser) -> Stream:
    """Rooms created (stored, resumable) and ``activity`` in rooms (ephemeral, for unread counts)."""
    return sse_response(chat_of(state).hub, LOBBY, last_id=last_event_id(request))


handlers = [room_events, lobby_events]
