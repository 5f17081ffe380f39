"""``/chat/session``: join with a display name, see who you are, leave."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import Cookie, State
from litestar.exceptions import ClientException, NotAuthorizedException
from litestar.params import JSONBody

from shared.errors import errors
from shared.security import COOKIE_PATH

from .context import CurrentUser, chat_of, session_cookie, session_of
from .ratelimit import Rate
from .rules import check_user_name
from .session import COOKIE, Session, User, new_session_id, new_user_id

__all__ = ["handlers"]


class NameBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str


@post("/chat/session", status_code=200, raises=errors(403, 409, 413, 422, 429, 503))
async def join(request: Request[Any, Any, Any], state: State, data: JSONBody[NameBody]) -> Response[dict[str, str]]:
    """Start a session with a display name, or change the name of the current one.

    Either way the cookie is a new one and the one sent with the request is revoked: a cookie
    planted before the join (session fixation) or copied from this browser is worth nothing."""
    chat = chat_of(state)
    name = check_user_name(data.name, chat.settings.max_user_name)
    # Each join is a new person for every per-person limit: joins are what one address pays.
    s = chat.settings
    await chat.take(Rate("join_rate", s.join_rate, s.join_burst, "joins per client address"), chat.address(request))
    try:
        old = await session_of(request, chat, required=False)
    except NotAuthorizedException:
        old = None  # revoked already: this is a fresh join
    user = User(old.user.id if old else new_user_id(), name)
    if not await chat.names.claim(user):
        raise ClientException(f"the name {name!r} is taken by someone online: pick another", status_code=409)
    if old is not None:
        await chat.revocations.revoke(old.sid, chat.settings.session_max_age)
    else:
        await chat.store.start_reading(user.id)
    session = Session(user, new_session_id())
    return Response({"id": user.id, "name": user.name}, cookies=[session_cookie(chat, session)])


@get("/chat/session", raises=errors(401, 409, 503))
async def whoami(request: Request[Any, Any, Any], state: State, user: CurrentUser) -> Response[dict[str, str]]:
    """Who the cookie says you are; renews the cookie, so an active session does not expire."""
    chat = chat_of(state)
    session = await session_of(request, chat)
    assert session is not None  # CurrentUser said so
    return Response({"id": user.id, "name": user.name}, cookies=[session_cookie(chat, session)])


@delete(
    "/chat/session",
    status_code=204,
    raises=errors(403, 503),
    response_cookies=[Cookie(key=COOKIE, value="", path=COOKIE_PATH, max_age=0, httponly=True, samesite="lax")],
)
async def leave(request: Request[Any, Any, Any], state: State) -> None:
    """Sign out: the cookie is cleared and revoked (a copy of it is refused, on every instance),
    and the name is free again at once."""
    chat = chat_of(state)
    session = chat.signer.loads(request.cookies.get(COOKIE))
    # A revoked copy signs nobody out: its name may belong to whoever joined after it.
    if session is not None and not await chat.revocations.is_revoked(session.sid):
        await chat.revocations.revoke(session.sid, chat.settings.session_max_age)
        await chat.names.release(session.user.id)


handlers = [join, whoami, leave]
