"""Who is in which room right now, and which display names are taken (per process, in memory).

A person is "in" a room while at least one of their streams of it is open: several tabs count
once. When the last one closes they stay for a grace period, so a reload or a network blip does
not announce "left" and "joined" to everybody. ``join``/``leave`` go out as ephemeral events:
they describe the present, so they are never replayed; a (re)connecting client gets a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from .session import User

__all__ = ["Presence"]

log = logging.getLogger(__name__)

Announce = Callable[[str, str, dict[str, Any]], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class _Member:
    name: str
    streams: int = 0
    leaving: asyncio.TimerHandle | None = None


class Presence:
    """``announce(room, event, payload)`` publishes ``join``/``leave`` to the room's topic."""

    def __init__(
        self, announce: Announce, *, grace: float, name_ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._announce = announce
        self.grace = grace
        self.name_ttl = name_ttl
        self._clock = clock
        self._rooms: dict[str, dict[str, _Member]] = {}
        self._seen: dict[str, float] = {}  # user id -> last request or stream activity
        self._names: dict[str, str] = {}  # casefolded name -> user id holding it
        self._name_of: dict[str, str] = {}  # user id -> casefolded name it holds
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_prune = clock()

    # -- names -------------------------------------------------------------------------------

    def touch(self, user_id: str) -> None:
        self._seen[user_id] = self._clock()

    def is_online(self, user_id: str) -> bool:
        if any(user_id in members for members in self._rooms.values()):
            return True
        seen = self._seen.get(user_id)
        return seen is not None and self._clock() - seen < self.name_ttl

    def claim(self, user: User) -> bool:
        """Reserve ``user.name`` for ``user.id``; ``False`` if someone else online holds it."""
        self._prune()
        key = user.name.casefold()
        holder = self._names.get(key)
        if holder is not None and holder != user.id and self.is_online(holder):
            return False
        if holder is not None and holder != user.id:
            self._name_of.pop(holder, None)
        old = self._name_of.get(user.id)
        if old is not None and old != key:
            self._names.pop(old, None)
        self._names[key] = user.id
        self._name_of[user.id] = key
        self.touch(user.id)
        return True

    def release(self, user_id: str) -> None:
        key = self._name_of.pop(user_id, None)
        if key is not None and self._names.get(key) == user_id:
            del self._names[key]
        self._seen.pop(user_id, None)

    def _prune(self) -> None:
        now = self._clock()
        if now - self._last_prune < self.name_ttl:
            return
        self._last_prune = now
        for user_id in [u for u, seen in self._seen.items() if now - seen >= self.name_ttl]:
            if not self.is_online(user_id):
                self.release(user_id)

    # -- rooms -------------------------------------------------------------------------------

    def members(self, room: str) -> list[dict[str, str]]:
        members = self._rooms.get(room, {})
        return sorted(({"id": uid, "name": m.name} for uid, m in members.items()), key=lambda m: m["name"].casefold())

    def enter(self, room: str, user: User) -> None:
        """A stream of ``room`` opened for ``user``; announces a join if they were not there.

        Synchronous, so the count is right even if the stream is cancelled straight after."""
        self.touch(user.id)
        members = self._rooms.setdefault(room, {})
        member = members.get(user.id)
        if member is None:
            member = members[user.id] = _Member(user.name)
            announce = True
        else:
            if member.leaving is not None:  # back within the grace period: never left
                member.leaving.cancel()
                member.leaving = None
            announce = member.name != user.name  # renamed: the join carries the new name
            member.name = user.name
        member.streams += 1
        if announce:
            self._spawn(room, "join", {"id": user.id, "name": user.name})

    def exit(self, room: str, user_id: str) -> None:
        """A stream closed. Synchronous: it runs while the stream's task is being cancelled."""
        self.touch(user_id)
        member = self._rooms.get(room, {}).get(user_id)
        if member is None:
            return
        member.streams -= 1
        if member.streams <= 0 and member.leaving is None:
            loop = asyncio.get_running_loop()
            member.leaving = loop.call_later(self.grace, self._expire, room, user_id)

    def _expire(self, room: str, user_id: str) -> None:
        members = self._rooms.get(room, {})
        member = members.get(user_id)
        if member is None or member.streams > 0:
            return
        del members[user_id]
        if not members:
            del self._rooms[room]
        self.touch(user_id)
        self._spawn(room, "leave", {"id": user_id, "name": member.name})

    def _spawn(self, room: str, event: str, payload: dict[str, Any]) -> None:
        task = asyncio.create_task(self._announce(room, event, payload))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not announce a presence change: %r", task.exception())

    async def close(self) -> None:
        for members in self._rooms.values():
            for member in members.values():
                if member.leaving is not None:
                    member.leaving.cancel()
        self._rooms.clear()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
