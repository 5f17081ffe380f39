"""Presence and display names in Redis, shared by every instance of the chat.

Keys (``P`` is the chat's prefix, ``sse:chat:`` by default):

- ``P presence:<room>``: sorted set of ``"<user id> <instance>"``, scored by when the entry
  expires (Redis's clock, ms). An instance adds an entry when one of its clients opens the
  room, extends its entries every heartbeat, and removes one when the person's last stream
  there closed and the grace period ran out. A person is in the room while any entry of theirs
  has not expired; a killed instance's entries expire ``presence_ttl`` seconds after its last
  heartbeat, and the next instance to reap the room announces those people's ``leave``.
- ``P presence-names:<room>``: hash, user id -> name shown; ``P presence-clients:<room>``: hash,
  user id -> the client address they joined from (for ``max_room_members_per_address``);
  ``P presence-rooms``: rooms with entries.
- ``P name:<the name's skeleton>`` -> user id, ``P name-of:<user id>`` -> that skeleton, both
  with a ``name_ttl`` TTL that every request and every heartbeat of an open stream renews.

Each change is one Lua script, so "was this person already here?" and "was that their last
entry?" are answered once for all instances: a join or a leave is announced exactly once.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from shared.backends.lua import load_lua

from .lookalike import skeleton
from .names import Names
from .presence import Added, ClientFull, Person, RoomFull, Roster
from .redis_conn import RedisConn
from .session import User

__all__ = ["RedisNames", "RedisRoster"]

_LIB = load_lua("chat", "lua/presence_lib.lua")
_ADD = _LIB + load_lua("chat", "lua/presence_add.lua")
_REMOVE = _LIB + load_lua("chat", "lua/presence_remove.lua")
_REFRESH = _LIB + load_lua("chat", "lua/presence_refresh.lua")
_REAP = _LIB + load_lua("chat", "lua/presence_reap.lua")
_MEMBERS = _LIB + load_lua("chat", "lua/presence_members.lua")
_CLAIM = load_lua("chat", "lua/presence_claim.lua")
_TOUCH = load_lua("chat", "lua/presence_touch.lua")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisRoster(Roster):
    """Rooms' members across instances; entries live ``ttl`` seconds unless heartbeats renew them."""

    shared = True

    def __init__(self, conn: RedisConn, ttl: float) -> None:
        self.conn = conn
        self.ttl = ttl
        self.instance = secrets.token_hex(6)
        self._add = conn.script(_ADD)
        self._remove = conn.script(_REMOVE)
        self._refresh = conn.script(_REFRESH)
        self._reap = conn.script(_REAP)
        self._members = conn.script(_MEMBERS)

    def _keys(self, room: str) -> list[str]:
        return [
            self.conn.key("presence", room),
            self.conn.key("presence-names", room),
            self.conn.key("presence-rooms"),
            self.conn.key("presence-clients", room),
        ]

    async def add(
        self, room: str, user: User, cap: int | None, client: str | None = None, client_cap: int | None = None
    ) -> Added:
        args: list[str | int] = [user.id, self.instance, user.name, _ms(self.ttl), cap or 0, room]
        args += [client or "", client_cap or 0]
        reply = await self._add(keys=self._keys(room), args=args)
        if reply[0] == -1:
            raise RoomFull(int(reply[1]))
        if reply[0] == -2:
            raise ClientFull(int(reply[1]))
        return "new" if reply[0] == 1 else "renamed" if reply[0] == 2 else "there"

    async def clients(self, room: str) -> dict[str, str]:
        found = await self.conn.text.hgetall(self.conn.key("presence-clients", room))
        return {str(k): str(v) for k, v in found.items()}

    async def remove(self, room: str, user_id: str) -> str | None:
        name = await self._remove(keys=self._keys(room), args=[user_id, self.instance, room])
        return None if name is None else str(name)

    async def members(self, room: str) -> list[dict[str, str]]:
        flat = await self._members(keys=self._keys(room)[:2])
        return [{"id": flat[i], "name": flat[i + 1]} for i in range(0, len(flat), 2)]

    async def refresh(self, present: dict[str, list[str]]) -> list[tuple[str, str]]:
        if not present:
            return []
        args: list[str | int] = [self.conn.prefix, self.instance, _ms(self.ttl)]
        for room, users in present.items():
            args += [room, len(users), *users]
        flat = await self._refresh(args=args)
        return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    async def reap(self) -> list[Person]:
        flat = await self._reap(keys=[self.conn.key("presence-rooms")], args=[self.conn.prefix])
        return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]


class RedisNames(Names):
    def __init__(self, conn: RedisConn, name_ttl: float) -> None:
        self.conn = conn
        self.name_ttl = name_ttl
        self._claim = conn.script(_CLAIM)
        self._touch = conn.script(_TOUCH)

    async def claim(self, user: User) -> bool:
        folded = skeleton(user.name)  # look-alikes are one name (chat.lookalike)
        keys = [self.conn.key("name", folded), self.conn.key("name-of", user.id)]
        args: list[str | int] = [user.id, folded, _ms(self.name_ttl), self.conn.prefix]
        return bool(await self._claim(keys=keys, args=args))

    async def release(self, user_id: str) -> None:
        await self._touch(args=[self.conn.prefix, 0, user_id])

    async def gone(self, user_id: str, linger: float) -> None:
        # The keys' TTL cut to ``linger``; an instance where they are still in a room renews it
        # with its next heartbeat (``linger`` is longer than one).
        await self._touch(args=[self.conn.prefix, _ms(linger), user_id])

    async def touch(self, user_ids: Iterable[str]) -> None:
        users = list(user_ids)
        if users:
            await self._touch(args=[self.conn.prefix, _ms(self.name_ttl), *users])
