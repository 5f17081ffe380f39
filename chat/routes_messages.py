"""``/chat/rooms/{room}/messages``: history pages, idempotent sends, edits, deletions, reactions."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.exceptions import ClientException, ValidationException
from litestar.params import FromPath, FromQuery, JSONBody

from shared.errors import errors
from shared.metrics import count

from .context import CurrentUser, chat_of
from .rules import check_client_msg_id, check_emoji, check_text

__all__ = ["handlers", "replayed"]


class SendBody(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    client_msg_id: str


class EditBody(msgspec.Struct, forbid_unknown_fields=True):
    text: str


class ReactBody(msgspec.Struct, forbid_unknown_fields=True):
    emoji: str


@get("/chat/rooms/{room:str}/messages", raises=errors(401, 404, 409, 503))
async def history(
    state: State,
    user: CurrentUser,
    room: FromPath[str],
    before: FromQuery[int | None] = None,
    limit: FromQuery[int | None] = None,
) -> dict[str, Any]:
    """Messages older than ``before`` (the newest if absent), oldest first, plus
    ``latest_event_id``: the stream position this page is consistent with."""
    chat = chat_of(state)
    size = limit if limit is not None else chat.settings.page_size
    if not 1 <= size <= chat.settings.max_page_size:
        raise ValidationException(f"limit must be between 1 and {chat.settings.max_page_size}")
    if before is not None and before < 1:
        raise ValidationException("before must be a message id (a positive integer)")
    return await chat.store.history(room, user.id, before, size)


def replayed(message: dict[str, Any], room: str) -> Response[dict[str, Any]]:
    """The answer to a retried send: the message stored the first time, never a second one."""
    if message["room"] != room:
        raise ClientException(
            f"client_msg_id {message['client_msg_id']!r} was already used in room {message['room']!r}; use a new id",
            status_code=409,
        )
    return Response(message, status_code=201, headers={"Idempotent-Replayed": "true"})


@post("/chat/rooms/{room:str}/messages", status_code=201, raises=errors(401, 403, 404, 409, 413, 422, 429, 503))
async def send(
    request: Request[Any, Any, Any], state: State, user: CurrentUser, room: FromPath[str], data: JSONBody[SendBody]
) -> Response[dict[str, Any]]:
    chat = chat_of(state)
    client_msg_id = check_client_msg_id(data.client_msg_id)
    text = check_text(data.text, chat.settings.max_text)
    earlier = await chat.store.find_sent(user.id, client_msg_id)
    if earlier is not None:
        return replayed(earlier, room)  # a retry costs no rate-limit token
    await chat.spend(user, request)
    message, created = await chat.store.post(room, user, text, client_msg_id)
    if not created:  # a concurrent retry won the race
        return replayed(message, room)
    count("chat_messages", "kind", "text")
    await chat.announce_activity(message)
    return Response(message, status_code=201)


@patch("/chat/rooms/{room:str}/messages/{message_id:int}", raises=errors(401, 403, 404, 409, 413, 422, 429, 503))
async def edit(
    request: Request[Any, Any, Any],
    state: State,
    user: CurrentUser,
    room: FromPath[str],
    message_id: FromPath[int],
    data: JSONBody[EditBody],
) -> dict[str, Any]:
    chat = chat_of(state)
    text = check_text(data.text, chat.settings.max_text)
    await chat.spend(user, request)
    return await chat.store.edit(room, message_id, user, text)


@delete(
    "/chat/rooms/{room:str}/messages/{message_id:int}", status_code=204, raises=errors(401, 403, 404, 409, 429, 503)
)
async def remove(
    request: Request[Any, Any, Any], state: State, user: CurrentUser, room: FromPath[str], message_id: FromPath[int]
) -> None:
    chat = chat_of(state)
    await chat.spend(user, request)
    file_id = await chat.store.delete(room, message_id, user)
    if file_id is not None:
        await chat.files.remove(file_id)


@post(
    "/chat/rooms/{room:str}/messages/{message_id:int}/reactions",
    status_code=200,
    raises=errors(401, 403, 404, 409, 413, 422, 429, 503),
)
async def react(
    request: Request[Any, Any, Any],
    state: State,
    user: CurrentUser,
    room: FromPath[str],
    message_id: FromPath[int],
    data: JSONBody[ReactBody],
) -> dict[str, Any]:
    """Toggle an emoji reaction of yours on a message."""
    chat = chat_of(state)
    emoji = check_emoji(data.emoji)
    await chat.spend(user, request)
    return await chat.store.react(room, message_id, user, emoji)


handlers = [history, send, edit, remove, react]
