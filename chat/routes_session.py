"""``/chat/session``: join with a display name, see who you are, leave."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import Cookie, State
from litestar.exceptions import ClientException
from litestar.params import JSONBody

from shared.errors import errors

from .context import CurrentUser, chat_of, session_cookie
from .rules import check_user_name
from .session import COOKIE, User, new_user_id

__all__ = ["handlers"]


class NameBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str


@post("/chat/session", status_code=200, raises=errors(403, 409, 413, 422, 503))
async def join(request: Request[Any, Any, Any], state: State, data: JSONBody[NameBody]) -> Response[dict[str, str]]:
    """Start a session with a display name, or change the name of the current one."""
    chat = chat_of(state)
    name = check_user_name(data.name, chat.settings.max_user_name)
    old = chat.signer.loads(request.cookies.get(COOKIE))
    user = User(old.id if old else new_user_id(), name)
    if not await chat.names.claim(user):
        raise ClientException(f"the name {name!r} is taken by someone online: pick another", status_code=409)
    if old is None:
        await chat.store.start_reading(user.id)
    return Response({"id": user.id, "name": user.name}, cookies=[session_cookie(chat, user)])


@get("/chat/session", raises=errors(401, 409, 503))
async def whoami(state: State, user: CurrentUser) -> Response[dict[str, str]]:
    """Who the cookie says you are; renews the cookie, so an active session does not expire."""
    return Response({"id": user.id, "name": user.name}, cookies=[session_cookie(chat_of(state), user)])


@delete(
    "/chat/session",
    status_code=204,
    raises=errors(403, 503),
    response_cookies=[Cookie(key=COOKIE, value="", path="/chat", max_age=0, httponly=True, samesite="lax")],
)
async def leave(request: Request[Any, Any, Any], state: State) -> None:
    """Sign out (the cookie is cleared): the name is free again at once."""
    chat = chat_of(state)
    user = chat.signer.loads(request.cookies.get(COOKIE))
    if user is not None:
        await chat.names.release(user.id)


handlers = [join, whoami, leave]
