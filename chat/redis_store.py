"""The Redis store: every instance of the chat on one Redis serves the same rooms and history.

The room streams of the hub's Redis backend are the log of record; the state that is not a
stream sits next to them (``P`` is the backend's prefix + ``chat:``, ``sse:chat:`` by default):

- ``P rooms``: hash, room name -> room JSON; ``P room-by``: hash, user-made room -> "<creator id>
  <creator address>" (for the per-client room caps and deletion); ``P seq``: the last message id;
- ``P msg:<id>``: hash: ``j`` the message as clients get it (JSON), ``v`` its version, ``room``,
  ``a`` author id, ``f`` file id; ``P room-msgs:<room>``: sorted set of the room's live messages
  (score = id), what history pages and unread counts read;
- ``P sent:<user>:<client_msg_id>``: the message a send made (idempotency), kept
  ``redis_sent_ttl``; ``P reads:<user>``: hash, room -> last read message id;
- ``P file:<id>``: an upload (bytes and metadata), see ``chat.redis_files``;
- ``P secret``: the session signing key, made by whichever instance starts first.

Redis may lose all of this (a restart without persistence, FLUSHALL, a failover to an empty
replica; issue 13.3). Each instance looks every ``_WATCH`` seconds: if the key is gone it puts
back the one it signs with (so cookies keep working everywhere) and makes the default rooms
again; if another instance put back a different one first (one started after the loss), it
signs with that one. Either way its cache of rooms is dropped. Sends check the room inside their
script, and the hub gives every live reader a ``reset`` (reason ``epoch``) before any new event.

Sends are one Lua script each (``chat.redis_scripts``); edits, deletions and reactions are
read-modify-write with a version check in the script (optimistic, retried on conflict).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from litestar.exceptions import NotFoundException, PermissionDeniedException, ServiceUnavailableException
from redis import exceptions as rex

from shared.backends.redis import RedisBackend
from shared.errors import Conflict

from . import redis_scripts as lua
from . import rules
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
from .redis_conn import RedisConn
from .session import User
from .settings import ChatSettings

__all__ = ["RedisStore", "toggle_reaction"]

log = logging.getLogger(__name__)

# Seconds between looks at whether Redis lost the chat's state (see the module docstring).
_WATCH = 0.5
# Seconds an instance trusts that a room it saw still exists.
_ROOM_CACHE = 2.0
# Tries of a read-modify-write before giving up with a 503 (only under heavy contention on one message).
_CAS_TRIES = 20
Change = tuple[Message, str, dict[str, Any]]  # the new message, the event name, the event's data


def toggle_reaction(reactions: list[dict[str, Any]], emoji: str, user: User, limit: int) -> list[dict[str, Any]]:
    """``user``'s ``emoji`` added or taken away; 409 past ``limit`` different emoji."""
    out = [{"emoji": r["emoji"], "users": list(r["users"])} for r in reactions]
    for r in out:
        if r["emoji"] == emoji:
            if any(u["id"] == user.id for u in r["users"]):
                r["users"] = [u for u in r["users"] if u["id"] != user.id]
                return [r for r in out if r["users"]]
            r["users"].append({"id": user.id, "name": user.name})
            return out
    if len(out) >= limit:
        raise Conflict(f"a message can have at most {limit} different emoji")
    return [*out, {"emoji": emoji, "users": [{"id": user.id, "name": user.name}]}]


def _file_json(file: StoredFile | None) -> dict[str, Any] | None:
    if file is None:
        return None
    return {
        "id": file.id,
        "name": file.name,
        "type": file.content_type,
        "size": file.size,
        "image": file.image,
        "url": f"/chat/files/{file.id}/{quote(file.name)}",
    }


class RedisStore(ChatStore):
    """Chat state in Redis next to the hub's room streams (see the module docstring)."""

    def __init__(self, conn: RedisConn, backend: RedisBackend, settings: ChatSettings) -> None:
        self.conn = conn
        self.backend = backend
        self.settings = settings
        # Rooms seen lately -> when: a room deleted on another instance is noticed within _ROOM_CACHE s
        # (sends check their room in their script anyway).
        self._rooms: dict[str, float] = {}
        self._secret: bytes | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False
        # Called with the new signing key when another instance's replaced a lost one.
        self.on_secret: Callable[[bytes], None] | None = None
        # Built on the backend's stream library: its events go in as the backend writes its own.
        self._scripts = {name: backend.stream_script(lua.source(name), conn.text) for name in lua.NAMES}

    async def close(self) -> None:
        self._closing = True
        if self._watcher is not None:
            # redis-py can swallow a cancel that lands while it opens a connection (see
            # shared.backends.redis._io): the flag ends the loop then, and close never waits long.
            self._watcher.cancel()
            await asyncio.wait({self._watcher}, timeout=2)
        await self.conn.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _stream(self, topic: str) -> str:
        return self.backend.stream_key(topic)

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run one of our scripts; the key prefix is ARGV[1] (the backend adds its retention)."""
        return await self._scripts[script](keys, [self.conn.prefix, *args])

    def _ms(self, seconds: float) -> int:
        return max(1, int(seconds * 1000))

    # -- lifetime ----------------------------------------------------------------------------

    async def secret(self) -> bytes:
        key = self.conn.key("secret")
        await self.conn.text.set(key, secrets.token_bytes(32).hex(), nx=True)
        value = await self.conn.text.get(key)
        self._secret = bytes.fromhex(str(value))
        return self._secret

    async def init(self) -> None:
        await self._init()
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="chat-redis-watch")

    async def _init(self) -> None:
        for name in self.settings.default_rooms:
            await self._create_room(name, SYSTEM, limit=0)
        await self._run("HELLO", [self._stream(LOBBY)], [dumps({"created_at": time.time()})])

    async def _watch(self) -> None:
        while not self._closing:
            await asyncio.sleep(_WATCH)
            try:
                await self._check_lost()
            except (rex.RedisError, OSError) as exc:  # Redis away: the next look tries again
                log.debug("cannot check the chat's Redis state (%s)", exc)

    async def _check_lost(self) -> None:
        """Put back what a Redis that lost its data lost: the signing key, the default rooms."""
        if self._secret is None:
            return
        key = self.conn.key("secret")
        restored = await self.conn.text.set(key, self._secret.hex(), nx=True)
        current = bytes.fromhex(str(await self.conn.text.get(key)))
        same = hmac.compare_digest(current, self._secret)  # a key: no timing to learn it from
        if not restored and same:
            return
        log.warning("the chat's Redis lost its data; restoring the default rooms and the session key")
        self._rooms.clear()
        if not same:
            self._secret = current
            if self.on_secret is not None:
                self.on_secret(current)
        await self._init()

    # -- rooms -------------------------------------------------------------------------------

    async def rooms(self, user_id: str) -> tuple[list[dict[str, Any]], str | None]:
        keys = [self.conn.key("rooms"), self.conn.key("reads", user_id), self._stream(LOBBY)]
        latest, flat = await self._run("ROOMS", keys, [])
        rooms = []
        for i in range(0, len(flat), 2):
            room = json.loads(flat[i])
            room["unread"] = int(flat[i + 1])
            rooms.append(room)
        rooms.sort(key=lambda r: r["name"])
        return rooms, await self.backend.event_id(latest) if latest else None

    async def require_room(self, name: str) -> None:
        now = time.monotonic()
        if now - self._rooms.get(name, -_ROOM_CACHE) < _ROOM_CACHE:
            return
        if not await self.conn.text.hexists(self.conn.key("rooms"), name):
            self._rooms.pop(name, None)
            raise NotFoundException(f"no room named {name[:40]!r}: create it with POST /chat/rooms")
        self._rooms[name] = now

    async def create_room(self, name: str, user: User, address: str | None = None) -> dict[str, Any]:
        room = await self._create_room(name, user.name, limit=self.settings.max_rooms, by_id=user.id, address=address)
        if room is None:
            raise Conflict(f"a room named {name!r} already exists")
        return room

    async def _create_room(
        self, name: str, by: str, *, limit: int, by_id: str = "", address: str | None = None
    ) -> dict[str, Any] | None:
        now = time.time()
        s = self.settings
        room = {"name": name, "created_by": by, "created_by_id": by_id, "created_at": now, "unread": 0}
        keys = [self.conn.key("rooms"), self._stream(LOBBY), self._stream(room_topic(name)), self.conn.key("room-by")]
        created = dumps({"room": name, "by": by, "ts": now})
        args = [name, dumps(room), created, limit, by_id, address or ""]
        args += [s.max_rooms_per_person, s.max_rooms_per_address, self._stream(room_topic(""))]
        reply = await self._run("CREATE_ROOM", keys, args)
        if reply[0] == -2:
            raise rooms_full(int(reply[1]), limit)
        if reply[0] in (-3, -4):
            rooms_check(s, int(reply[1]) if reply[0] == -3 else 0, int(reply[1]) if reply[0] == -4 else 0)
        if reply[0] == 1 and reply[1]:
            self._rooms.pop(str(reply[1]), None)
        self._rooms[name] = time.monotonic()
        return room if reply[0] == 1 else None

    async def delete_room(self, name: str, user: User) -> None:
        keys = [self.conn.key("rooms"), self.conn.key("room-by"), self._stream(LOBBY)]
        reply = await self._run("DELETE_ROOM", keys, [name, user.id, self._stream(room_topic(""))])
        self._rooms.pop(name, None)
        if reply[0] == 0:
            raise NotFoundException(f"no room named {name[:40]!r}")
        if reply[0] == -1:
            check_deletable(self.settings, name, "", user)
        if reply[0] == -2:
            check_deletable(self.settings, name, "someone else", user)
        if reply[0] == -3:
            raise not_empty(name, int(reply[1]))

    async def expire_rooms(self, idle: float) -> list[str]:
        keys = [self.conn.key("room-by"), self._stream(LOBBY)]
        names = [str(n) for n in await self._run("EXPIRE_ROOMS", keys, [self._ms(idle), self._stream(room_topic(""))])]
        for name in names:
            self._rooms.pop(name, None)
        return names

    # -- messages ----------------------------------------------------------------------------

    def _sent_key(self, user_id: str, client_msg_id: str) -> str:
        return self.conn.key("sent", user_id, client_msg_id)

    async def _message(self, message_id: str) -> Message | None:
        raw = await self.conn.text.hget(self.conn.key("msg", message_id), "j")
        return None if raw is None else dict(json.loads(raw))

    async def _sent(self, message_id: str, client_msg_id: str) -> Message:
        message = await self._message(message_id)
        if message is None:
            raise Conflict(
                f"client_msg_id {client_msg_id!r} was used for a message that is no longer kept "
                "(past the history retention); use a new id"
            )
        return message

    async def find_sent(self, user_id: str, client_msg_id: str) -> Message | None:
        message_id = await self.conn.text.get(self._sent_key(user_id, client_msg_id))
        return None if message_id is None else await self._sent(str(message_id), client_msg_id)

    async def post(
        self, room: str, user: User, text: str, client_msg_id: str, file: StoredFile | None = None
    ) -> tuple[Message, bool]:
        await self.require_room(room)
        # The message as clients get it, but for its id, which the script hands out and puts first.
        body = {
            "room": room,
            "author_id": user.id,
            "author": user.name,
            "text": text,
            "client_msg_id": client_msg_id,
            "ts": time.time(),
            "edited_at": None,
            "version": 1,
            "deleted": False,
            "mentions": rules.mentions(text),
            "reactions": [],
            "file": _file_json(file),
        }
        keys = [
            self.conn.key("seq"),
            self._sent_key(user.id, client_msg_id),
            self._stream(room_topic(room)),
            self.conn.key("room-msgs", room),
            self.conn.key("reads", user.id),
            self.conn.key("rooms"),
        ]
        args = [
            room,
            user.id,
            dumps(body),
            file.id if file else "",
            self._ms(self.settings.redis_sent_ttl),
            self._ms(self.settings.session_max_age),
        ]
        reply = await self._run("POST", keys, args)
        if reply[0] == 0:
            return await self._sent(str(reply[1]), client_msg_id), False
        if reply[0] == -1:
            raise ServiceUnavailableException("the upload expired before it was attached; send it again")
        if reply[0] == -2:
            self._rooms.pop(room, None)
            raise NotFoundException(f"no room named {room[:40]!r}: create it with POST /chat/rooms")
        return dict(json.loads(reply[2])), True

    async def _change(self, room: str, message_id: int, make: Callable[[Message], Change | None]) -> Message:
        """Read the message, let ``make`` build the change, write it if nobody changed it meanwhile."""
        await self.require_room(room)
        if not 0 < message_id < MAX_ID:
            raise NotFoundException(f"no message {message_id} in this room")
        mid = str(message_id)
        key = self.conn.key("msg", mid)
        for _ in range(_CAS_TRIES):
            raw, version, where = await self.conn.text.hmget(key, ["j", "v", "room"])
            message = json.loads(raw) if raw is not None else None
            if message is None or where != room or message["deleted"]:
                raise NotFoundException(f"no message {message_id} in this room (it may have been deleted)")
            change = make(message)
            if change is None:
                return dict(message)
            new, event, data = change
            keys = [key, self._stream(room_topic(room)), self.conn.key("room-msgs", room)]
            deleting = "1" if new["deleted"] else "0"
            args = [room, mid, version, dumps(new), event, dumps(data), deleting]
            if await self._run("CHANGE", keys, args):
                return new
        raise ServiceUnavailableException(
            "this message is being changed by many people at once; retry", headers={"Retry-After": "1"}
        )

    async def edit(self, room: str, message_id: int, user: User, text: str) -> Message:
        def make(message: Message) -> Change | None:
            _own(message, user, "edit")
            if message["text"] == text:
                return None
            new = {
                **message,
                "text": text,
                "mentions": rules.mentions(text),
                "edited_at": time.time(),
                "version": message["version"] + 1,
            }
            return new, "edit", {k: new[k] for k in ("id", "text", "mentions", "edited_at", "version")}

        return await self._change(room, message_id, make)

    async def delete(self, room: str, message_id: int, user: User) -> str | None:
        def make(message: Message) -> Change:
            _own(message, user, "delete")
            version = message["version"] + 1
            new = {**message, "text": "", "mentions": [], "reactions": [], "deleted": True, "version": version}
            return new, "delete", {"id": message_id, "version": version}

        await self._change(room, message_id, make)
        return None  # the script dropped the file's bytes along with the message

    async def react(self, room: str, message_id: int, user: User, emoji: str) -> Message:
        limit = self.settings.max_reactions

        def make(message: Message) -> Change:
            reactions = toggle_reaction(message["reactions"], emoji, user, limit)
            new = {**message, "reactions": reactions, "version": message["version"] + 1}
            return new, "reaction", {k: new[k] for k in ("id", "reactions", "version")}

        return await self._change(room, message_id, make)

    async def history(self, room: str, user_id: str, before: int | None, limit: int) -> dict[str, Any]:
        await self.require_room(room)
        keys = [self.conn.key("room-msgs", room), self._stream(room_topic(room)), self.conn.key("reads", user_id)]
        upper = min(before, MAX_ID) if before is not None else MAX_ID
        latest, read, raws = await self._run("HISTORY", keys, [room, upper, limit])
        messages = [json.loads(raw) for raw in raws if raw]
        return {
            "room": room,
            "messages": messages[:limit][::-1],
            "has_more": len(raws) > limit,
            "latest_event_id": await self.backend.event_id(latest) if latest else None,
            "last_read": int(read),
        }

    async def mark_read(self, room: str, user_id: str, message_id: int) -> None:
        await self.require_room(room)
        message_id = max(0, min(message_id, MAX_ID))
        ttl = self._ms(self.settings.session_max_age)
        await self._run("MARK_READ", [self.conn.key("reads", user_id)], [room, message_id, ttl])

    async def start_reading(self, user_id: str) -> None:
        keys = [self.conn.key("reads", user_id), self.conn.key("rooms"), self.conn.key("seq")]
        await self._run("START_READING", keys, [self._ms(self.settings.session_max_age)])

    async def file(self, file_id: str) -> StoredFile | None:
        fields = ["name", "type", "size", "image", "msg"]
        name, content_type, size, image, message = await self.conn.text.hmget(self.conn.key("file", file_id), fields)
        if not message or name is None:
            return None  # never attached (or its message was deleted, which deletes the file)
        return StoredFile(file_id, str(name), str(content_type), int(str(size)), image == "1")


def _own(message: Message, user: User, what: str) -> None:
    if message["author_id"] != user.id:
        raise PermissionDeniedException(f"you can only {what} your own messages")
