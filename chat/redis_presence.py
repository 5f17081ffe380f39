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

from .lookalike import skeleton
from .names import Names
from .presence import Added, ClientFull, Person, RoomFull, Roster
from .redis_conn import RedisConn
from .session import User

__all__ = ["RedisNames", "RedisRoster"]

_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function who(member) return string.match(member, '^(%S+) ') end
"""

# KEYS: presence:<room>, presence-names:<room>, presence-rooms, presence-clients:<room>
# ARGV: user id, instance, name, ttl ms, cap (0: none), room, client address ('': none), cap per
# address (0: none) -> {1} new | {2} renamed | {0} there | {-1, count} full | {-2, count} address's share
_ADD = (
    _LIB
    + """
local uid, now, client = ARGV[1], now_ms(), ARGV[7]
local seen, count, present, same = {}, 0, false, 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  local u = who(m)
  if u and not seen[u] then
    seen[u] = true
    count = count + 1
    if client ~= '' and redis.call('HGET', KEYS[4], u) == client then same = same + 1 end
  end
  if u == uid then present = true end
end
local cap, client_cap = tonumber(ARGV[5]), tonumber(ARGV[8])
if not present and client ~= '' and client_cap > 0 and same >= client_cap then return {-2, same} end
if not present and cap > 0 and count >= cap then return {-1, count} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), uid .. ' ' .. ARGV[2])
redis.call('SADD', KEYS[3], ARGV[6])
if not present then
  if client ~= '' then redis.call('HSET', KEYS[4], uid, client) else redis.call('HDEL', KEYS[4], uid) end
end
local old = redis.call('HGET', KEYS[2], uid)
redis.call('HSET', KEYS[2], uid, ARGV[3])
if not present then return {1} end
if old ~= ARGV[3] then return {2} end
return {0}
"""
)

# KEYS: as _ADD. ARGV: user id, instance, room -> their name if they left for good, else nil
_REMOVE = (
    _LIB
    + """
local uid, now = ARGV[1], now_ms()
local removed = redis.call('ZREM', KEYS[1], uid .. ' ' .. ARGV[2])
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  if who(entries[i]) == uid then
    if tonumber(entries[i + 1]) > now then return false end  -- still here through another instance
    removed = removed + redis.call('ZREM', KEYS[1], entries[i])  -- expired: reaped here, not twice
  end
end
if removed == 0 then return false end  -- gone already (reaped): its leave went out then
local name = redis.call('HGET', KEYS[2], uid) or ''
redis.call('HDEL', KEYS[2], uid)
redis.call('HDEL', KEYS[4], uid)
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[3]) end
return name
"""
)

# ARGV: prefix, instance, ttl ms, then per room: room, n, n user ids -> {room, user id, ...} not found
_REFRESH = (
    _LIB
    + """
local P, inst, ttl, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), now_ms()
local out, i = {}, 4
while i <= #ARGV do
  local room, n = ARGV[i], tonumber(ARGV[i + 1])
  local z = P .. 'presence:' .. room
  for j = 1, n do
    local member = ARGV[i + 1 + j] .. ' ' .. inst
    if redis.call('ZSCORE', z, member) then
      redis.call('ZADD', z, 'XX', now + ttl, member)
    else
      out[#out + 1] = room
      out[#out + 1] = ARGV[i + 1 + j]
    end
  end
  i = i + 2 + n
end
return out
"""
)

# KEYS: presence-rooms. ARGV: prefix -> {room, user id, name, ...} of the people who left
_REAP = (
    _LIB
    + """
local P, now, out = ARGV[1], now_ms(), {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local z, h = P .. 'presence:' .. room, P .. 'presence-names:' .. room
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    local live, done = {}, {}
    for _, m in ipairs(redis.call('ZRANGE', z, 0, -1)) do live[who(m) or ''] = true end
    for _, m in ipairs(dead) do
      local u = who(m)
      if u and not live[u] and not done[u] then
        done[u] = true
        out[#out + 1] = room
        out[#out + 1] = u
        out[#out + 1] = redis.call('HGET', h, u) or ''
        redis.call('HDEL', h, u)
        redis.call('HDEL', P .. 'presence-clients:' .. room, u)
      end
    end
  end
  if redis.call('ZCARD', z) == 0 then
    redis.call('SREM', KEYS[1], room)
    redis.call('DEL', h, P .. 'presence-clients:' .. room)
  end
end
return out
"""
)

# KEYS: presence:<room>, presence-names:<room> -> {user id, name, ...}
_MEMBERS = (
    _LIB
    + """
local seen, out = {}, {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_ms(), '+inf')) do
  local u = who(m)
  if u and not seen[u] then
    seen[u] = true
    out[#out + 1] = u
    out[#out + 1] = redis.call('HGET', KEYS[2], u) or ''
  end
end
return out
"""
)

# KEYS: name:<folded>, name-of:<user>. ARGV: user id, folded name, ttl ms, prefix -> 1 | 0 taken
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
local old = redis.call('GET', KEYS[2])
if old and old ~= ARGV[2] and redis.call('GET', ARGV[4] .. 'name:' .. old) == ARGV[1] then
  redis.call('DEL', ARGV[4] .. 'name:' .. old)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""

# ARGV: prefix, ttl ms (0: release), user ids. Renews (or drops) the names these users hold.
_TOUCH = """
local P, ttl = ARGV[1], tonumber(ARGV[2])
local function keep(key)
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) else redis.call('DEL', key) end
end
for i = 3, #ARGV do
  local folded = redis.call('GET', P .. 'name-of:' .. ARGV[i])
  if folded and redis.call('GET', P .. 'name:' .. folded) == ARGV[i] then keep(P .. 'name:' .. folded) end
  keep(P .. 'name-of:' .. ARGV[i])
end
return 1
"""


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
