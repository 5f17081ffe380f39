"""File sharing: upload into a room (as a message), download with safe headers.

The upload body is the raw file (``fetch(url, {method: "POST", body: file})``, or
``curl --data-binary @f``), streamed to disk under the size limit; no multipart parsing, no
whole-file buffering.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import FromPath, FromQuery
from litestar.response import File

from shared.errors import errors
from shared.metrics import count
from shared.openapi import FileOperation, read_body
from shared.security import RAW_BODY

from .context import CurrentUser, chat_of
from .files import drain
from .routes_messages import replayed
from .rules import check_client_msg_id, check_file_name

__all__ = ["handlers"]

# Served files are data, never a page: no script, no plugins, no framing, whatever they contain.
FILE_CSP = "default-src 'none'; img-src 'self'; sandbox"

_UPLOAD = read_body(
    "application/octet-stream",
    Schema(type=OpenAPIType.STRING, content_media_type="application/octet-stream"),
    "the file's bytes (any Content-Type; images are recognised by their bytes)",
)


@post(
    "/chat/rooms/{room:str}/files",
    status_code=201,
    request_max_body_size=None,
    raises=errors(401, 403, 404, 409, 413, 415, 422, 429, 503),
    operation_class=_UPLOAD,
    opt={RAW_BODY: True},
)
async def upload(
    request: Request[Any, Any, Any],
    state: State,
    user: CurrentUser,
    room: FromPath[str],
    name: FromQuery[str],
    client_msg_id: FromQuery[str],
) -> Response[dict[str, Any]]:
    """Share a file in ``room``: ``?name=<file name>&client_msg_id=<id>``, body = the bytes."""
    chat = chat_of(state)
    cmid = check_client_msg_id(client_msg_id)
    filename = check_file_name(name)
    await chat.store.require_room(room)
    earlier = await chat.store.find_sent(user.id, cmid)
    if earlier is not None:
        await drain(request.stream(), 4 * chat.settings.max_file_bytes)  # read it, then answer
        return replayed(earlier, room)
    await chat.spend(user, request)
    stored = await chat.files.save(
        request.stream(), filename, request.headers.get("content-type"), request.content_length
    )
    try:
        message, created = await chat.store.post(room, user, "", cmid, stored)
    except BaseException:
        await chat.files.remove(stored.id)
        raise
    if not created:
        await chat.files.remove(stored.id)
        return replayed(message, room)
    count("chat_messages", "kind", "file")
    await chat.announce_activity(message)
    return Response(message, status_code=201)


@get(
    "/chat/files/{file_id:str}/{name:str}",
    media_type="*/*",  # an image's own type, or application/octet-stream
    raises=errors(401, 404, 409, 503),
    operation_class=FileOperation,
)
async def download(state: State, user: CurrentUser, file_id: FromPath[str], name: FromPath[str]) -> Response[Any]:
    """Images inline (typed from their bytes), everything else as an ``attachment`` download."""
    chat = chat_of(state)
    info = await chat.store.file(file_id) if chat.files.valid_id(file_id) else None
    content = await chat.files.content(file_id) if info is not None else None
    if info is None or content is None:
        raise NotFoundException("no such file (it may have been deleted with its message)")
    disposition = "inline" if info.image else "attachment"
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in info.name)
    media_type = info.content_type if info.image else "application/octet-stream"
    headers = {
        "Content-Disposition": f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(info.name)}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": FILE_CSP,
        "Cache-Control": "private, max-age=86400",
    }
    if isinstance(content, bytes):  # kept in Redis
        return Response(content, media_type=media_type, headers=headers)
    return File(content, media_type=media_type, headers=headers)


handlers = [upload, download]
