"""Who is in which room right now.

A person is "in" a room while at least one of their streams of it is open: several tabs (on any
instance) count once. When the last one closes they stay for a grace period, so a reload or a
network blip does not announce "left" and "joined" to everybody. ``join``/``leave`` go out as
ephemeral events: they describe the present, so they are never replayed; a (re)connecting
client gets a snapshot.

``Presence`` does this instance's part: it counts its own streams, runs the grace timers and
announces. The ``Roster`` says who is in a room across instances and decides, atomically, who
is new (announce ``join``) and who has gone for good (announce ``leave``), so each is
announced once however many instances there are. ``MemoryRoster`` is the roster of one
process; ``chat.redis_presence.RedisRoster`` is shared, with heartbeats: the people of an
instance that died leave when its entries expire.

A room holds at most ``cap`` people (``ChatSettings.max_room_members``), and at most
``client_cap`` of them from one client address (``max_room_members_per_address``: sessions are
cheap, so one address could otherwise fill a room with fake members: issue 14.4). One more is
refused with 409 when opening the room's stream, before it starts. When the room is full, a
client that has nobody in it still gets in on this instance if someone is only in their grace
period here: the one whose address has the most people in the room makes way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from litestar.exceptions import ClientException

from .names import Names
from .session import User

__all__ = ["Added", "ClientFull", "MemoryRoster", "Presence", "RoomFull", "Roster"]

log = logging.getLogger(__name__)

Announce = Callable[[str, str, dict[str, Any]], Coroutine[Any, Any, None]]
# What adding someone to a room meant: they were not there ("new"), were there under another
# name ("renamed": the join carries the new name), or were there already.
Added = Literal["new", "renamed", "there"]
Person = tuple[str, str, str]  # (room, user id, name)


class RoomFull(LookupError):
    def __init__(self, count: int) -> None:
        super().__init__(f"the room has {count} people in it")
        self.count = count


class ClientFull(RoomFull):
    """The room has ``client_cap`` people from this client address already."""


class Roster(ABC):
    """Who is in which room. ``shared``: other instances write here too (heartbeats needed)."""

    shared: ClassVar[bool] = False

    @abstractmethod
    async def add(
        self, room: str, user: User, cap: int | None, client: str | None = None, client_cap: int | None = None
    ) -> Added:
        """Put ``user`` in ``room`` (for this instance); ``RoomFull`` if it has ``cap`` others,
        ``ClientFull`` if ``client_cap`` of them came from ``client`` (``None``: not counted)."""

    async def clients(self, room: str) -> dict[str, str]:
        """User id -> the client address they joined ``room`` from (those that have one)."""
        return {}

    @abstractmethod
    async def remove(self, room: str, user_id: str) -> str | None:
        """This instance's part of ``user_id`` left ``room``: their name if they left it for good."""

    @abstractmethod
    async def members(self, room: str) -> list[dict[str, str]]:
        """``[{"id", "name"}]`` of the people in ``room``, in no particular order."""

    async def refresh(self, present: dict[str, list[str]]) -> list[tuple[str, str]]:
        """Heartbeat: ``{room: [user id]}`` of this instance are still there (entries extended,
        never made). Returns the ``(room, user id)`` whose entry was gone (taken for dead)."""
        return []

    async def reap(self) -> list[Person]:
        """Drop the entries of instances that stopped heartbeating; the people who left with them."""
        return []

    async def close(self) -> None:  # noqa: B027 - optional hook
        """This instance is going; what it held expires on its own."""


class MemoryRoster(Roster):
    """The roster of a single process."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, str]] = {}
        self._clients: dict[str, dict[str, str]] = {}  # room -> user id -> client address

    def is_present(self, user_id: str) -> bool:
        return any(user_id in members for members in self._rooms.values())

    async def add(
        self, room: str, user: User, cap: int | None, client: str | None = None, client_cap: int | None = None
    ) -> Added:
        members = self._rooms.setdefault(room, {})
        clients = self._clients.setdefault(room, {})
        old = members.get(user.id)
        if old is None and client and client_cap is not None:
            same = sum(1 for c in clients.values() if c == client)
            if same >= client_cap:
                raise ClientFull(same)
        if old is None and cap is not None and len(members) >= cap:
            raise RoomFull(len(members))
        members[user.id] = user.name
        if old is None and client:
            clients[user.id] = client
        return "new" if old is None else "renamed" if old != user.name else "there"

    async def clients(self, room: str) -> dict[str, str]:
        return dict(self._clients.get(room, {}))

    async def remove(self, room: str, user_id: str) -> str | None:
        members = self._rooms.get(room, {})
        name = members.pop(user_id, None)
        self._clients.get(room, {}).pop(user_id, None)
        if not members:
            self._rooms.pop(room, None)
            self._clients.pop(room, None)
        return name

    async def members(self, room: str) -> list[dict[str, str]]:
        return [{"id": uid, "name": name} for uid, name in self._rooms.get(room, {}).items()]

    async def close(self) -> None:
        self._rooms.clear()


@dataclass(slots=True)
class _Member:
    """This instance's view of one person in one room."""

    name: str
    streams: int = 0
    leaving: asyncio.TimerHandle | None = None
    join_due: bool = False  # admitted as new: announce the join once their stream is open


class Presence:
    """``announce(room, event, payload)`` publishes ``join``/``leave`` to the room's topic.

    A room stream calls :meth:`admit` in its handler (the cap, before any byte is sent), then
    :meth:`enter` when it starts and :meth:`exit` when it ends.
    """

    def __init__(
        self,
        roster: Roster,
        names: Names,
        announce: Announce,
        *,
        grace: float,
        cap: int | None = None,
        client_cap: int | None = None,
        heartbeat: float = 5.0,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.roster = roster
        self.names = names
        self._announce = announce
        self.grace = grace
        self.cap = cap
        self.client_cap = client_cap
        self.heartbeat = heartbeat
        self._stopping = stopping
        self._local: dict[str, dict[str, _Member]] = {}
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._beat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.roster.shared and self._beat is None:
            self._beat = asyncio.create_task(self._heartbeats(), name="chat-presence")

    # -- one person's streams ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lock(self, room: str, user_id: str) -> AsyncIterator[None]:
        """One roster change at a time per person and room, in the order they were asked for."""
        key = (room, user_id)
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def admit(self, room: str, user: User, client: str | None = None) -> None:
        """Let ``user`` (from ``client``) into ``room``: 409 if it is full, or holds its share of
        people from that address (someone already in it is never refused).

        They count as in the room from now; if no stream follows, they leave after the grace period."""
        async with self._lock(room, user.id):
            try:
                added = await self._add(room, user, client)
            except ClientFull as exc:
                raise ClientException(
                    f"the room {room!r} has {exc.count} people from your address {client} in it, the limit is "
                    f"{self.client_cap} per client address; try again when one of them leaves",
                    status_code=409,
                    extra={"limit_name": "max_room_members_per_address", "limit": self.client_cap},
                ) from None
            except RoomFull as exc:
                raise ClientException(
                    f"the room {room!r} is full: {exc.count} people are in it and the limit is {self.cap}; "
                    "try again when someone leaves",
                    status_code=409,
                    extra={"limit_name": "max_room_members", "limit": self.cap},
                ) from None
            member = self._local.setdefault(room, {}).get(user.id)
            if member is None:
                member = self._local[room][user.id] = _Member(user.name)
            member.name = user.name
            if added != "there":
                member.join_due = True
            if member.streams == 0 and member.leaving is None:
                self._arm(room, user.id, member)

    async def _add(self, room: str, user: User, client: str | None) -> Added:
        try:
            return await self.roster.add(room, user, self.cap, client, self.client_cap)
        except ClientFull:
            raise
        except RoomFull:
            # Full: a client with nobody in the room may take the place of someone who is only
            # in their grace period here, from the address with the most people in the room.
            if not await self._make_way(room, user.id, client):
                raise
            return await self.roster.add(room, user, self.cap, client, self.client_cap)

    async def _make_way(self, room: str, user_id: str, client: str | None) -> bool:
        clients = await self.roster.clients(room)
        held: dict[str, int] = {}
        for c in clients.values():
            held[c] = held.get(c, 0) + 1
        if held.get(client or "", 0) > 0:
            return False  # it holds someone already: the cap is the cap
        away = [
            (held.get(clients.get(uid, ""), 0), uid)
            for uid, m in self._local.get(room, {}).items()
            if m.streams == 0 and uid != user_id and clients.get(uid)
        ]
        if not away:
            return False
        _, victim = max(away)
        member = self._local[room].pop(victim)
        if member.leaving is not None:
            member.leaving.cancel()
        name = await self.roster.remove(room, victim)
        await self._gone(victim)
        if name is not None and not member.join_due:
            await self._announce(room, "leave", {"id": victim, "name": name})
        return True

    def enter(self, room: str, user: User) -> None:
        """A stream of ``room`` opened for ``user`` (after :meth:`admit`).

        Synchronous, so the count is right even if the stream is cancelled straight after."""
        self.names.seen(user.id)
        member = self._local.setdefault(room, {}).get(user.id)
        if member is None:  # the grace period ran out between admit and the stream's start
            member = self._local[room][user.id] = _Member(user.name)
            self._spawn(self._readmit(room, user))
        member.streams += 1
        if member.leaving is not None:  # back within the grace period: never left
            member.leaving.cancel()
            member.leaving = None
        if member.join_due:
            member.join_due = False
            self._spawn(self._announce(room, "join", {"id": user.id, "name": user.name}))

    def exit(self, room: str, user_id: str) -> None:
        """A stream closed. Synchronous: it runs while the stream's task is being cancelled."""
        self.names.seen(user_id)
        member = self._local.get(room, {}).get(user_id)
        if member is None:
            return
        member.streams -= 1
        if member.streams <= 0 and member.leaving is None:
            self._arm(room, user_id, member)

    def _arm(self, room: str, user_id: str, member: _Member) -> None:
        member.leaving = asyncio.get_running_loop().call_later(self.grace, self._expire, room, user_id)

    def _expire(self, room: str, user_id: str) -> None:
        member = self._local.get(room, {}).get(user_id)
        if member is None or member.streams > 0:
            return
        member.leaving = None
        self._spawn(self._leave(room, user_id))

    async def _leave(self, room: str, user_id: str) -> None:
        async with self._lock(room, user_id):
            members = self._local.get(room, {})
            member = members.get(user_id)
            if member is None or member.streams > 0 or member.leaving is not None:
                return  # came back (a stream, or a new admission) while this waited
            if self._stopping():
                # Shutting down: nobody would hear this instance's "leave". Its entries expire and
                # another instance announces it, unless the person reconnects there first.
                return
            del members[user_id]
            if not members:
                self._local.pop(room, None)
            name = await self.roster.remove(room, user_id)
            await self._gone(user_id)
            if name is not None and not member.join_due:
                await self._announce(room, "leave", {"id": user_id, "name": name})

    async def _gone(self, user_id: str) -> None:
        """In no room here any more: their name is free soon (``Names.gone``). On a shared roster,
        two heartbeats' time, so an instance where they are still in a room keeps it for them."""
        if not any(user_id in members for members in self._local.values()):
            await self.names.gone(user_id, 2 * self.heartbeat if self.roster.shared else 0.0)

    async def _readmit(self, room: str, user: User) -> None:
        async with self._lock(room, user.id):
            if await self.roster.add(room, user, None) != "there":
                await self._announce(room, "join", {"id": user.id, "name": user.name})

    # -- the room ------------------------------------------------------------------------------

    async def members(self, room: str) -> list[dict[str, str]]:
        members = await self.roster.members(room)
        return sorted(members, key=lambda m: (m["name"].casefold(), m["id"]))

    # -- the shared roster's upkeep --------------------------------------------------------------

    async def _heartbeats(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self.beat()
            except Exception as exc:
                if not failing:
                    log.warning("presence heartbeat failed (%r); retrying every %.1f s", exc, self.heartbeat)
                failing = True
            else:
                if failing:
                    log.warning("presence heartbeat works again")
                failing = False

    async def beat(self) -> None:
        """Say who is still here, keep their names, and announce the people of vanished instances."""
        present = {room: list(members) for room, members in self._local.items()}
        for room, uid in await self.roster.refresh(present):
            await self._restore(room, uid)
        await self.names.touch({uid for members in present.values() for uid in members})
        for room, uid, name in await self.roster.reap():
            await self._announce(room, "leave", {"id": uid, "name": name})

    async def _restore(self, room: str, user_id: str) -> None:
        """Back in the roster if still here (this instance was taken for dead, e.g. it stalled)."""
        async with self._lock(room, user_id):
            member = self._local.get(room, {}).get(user_id)
            if member is None or await self.roster.add(room, User(user_id, member.name), None) == "there":
                return
            if member.streams > 0:
                member.join_due = False
                await self._announce(room, "join", {"id": user_id, "name": member.name})
            else:
                member.join_due = True  # announced when its stream opens

    # -- tasks -----------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not record or announce a presence change: %r", task.exception())

    async def close(self) -> None:
        for members in self._local.values():
            for member in members.values():
                if member.leaving is not None:
                    member.leaving.cancel()
        self._local.clear()
        tasks = [*self._tasks, *([self._beat] if self._beat is not None else [])]
        self._beat = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.roster.close()
