"""Display names: unique among the people online, free again once they go.

"Unique" is by :func:`chat.lookalike.skeleton`: case, fullwidth forms, invisible characters and
Cyrillic or Greek look-alikes do not make a name different (``boss``, ``b\u043ess`` with a
Cyrillic o and a fullwidth ``\uff42oss`` are one name: issue 14.9).

A name is held by a user id while that person is online: in a room, or seen (a request, a
stream opening or closing) within ``name_ttl`` seconds. Someone who leaves their last room (their
last stream closed and the presence grace ran out) holds it only ``linger`` seconds more: a closed
browser's name was otherwise "taken by someone online" for a minute with nobody online (issue 18).
``LocalNames`` keeps this in the process; ``chat.redis_presence.RedisNames`` in Redis keys with
that TTL, for every instance.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

from .lookalike import skeleton
from .session import User

__all__ = ["LocalNames", "Names"]


class Names(ABC):
    @abstractmethod
    async def claim(self, user: User) -> bool:
        """Reserve ``user.name`` for ``user.id`` (and keep it); ``False`` if someone else online holds it."""

    @abstractmethod
    async def release(self, user_id: str) -> None:
        """The user signed out: their name is free at once."""

    async def touch(self, user_ids: Iterable[str]) -> None:  # noqa: B027 - optional hook
        """These people have streams open: keep their names (called every presence heartbeat)."""

    def seen(self, user_id: str) -> None:  # noqa: B027 - optional hook
        """A stream of this user opened or closed just now."""

    @abstractmethod
    async def gone(self, user_id: str, linger: float) -> None:
        """The user left their last room on this instance: their name stays theirs ``linger``
        seconds more, unless they are seen again or a heartbeat says they are in a room elsewhere."""


class LocalNames(Names):
    """Names in this process. ``is_present(user_id)``: is the user in a room right now?"""

    def __init__(
        self, name_ttl: float, is_present: Callable[[str], bool], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name_ttl = name_ttl
        self._is_present = is_present
        self._clock = clock
        self._seen: dict[str, float] = {}  # user id -> last request or stream activity
        self._names: dict[str, str] = {}  # the name's skeleton -> user id holding it
        self._name_of: dict[str, str] = {}  # user id -> the skeleton of the name it holds
        self._last_prune = clock()

    def seen(self, user_id: str) -> None:
        self._seen[user_id] = self._clock()

    def is_online(self, user_id: str) -> bool:
        if self._is_present(user_id):
            return True
        seen = self._seen.get(user_id)
        return seen is not None and self._clock() - seen < self.name_ttl

    async def claim(self, user: User) -> bool:
        self._prune()
        key = skeleton(user.name)
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
        self.seen(user.id)
        return True

    async def release(self, user_id: str) -> None:
        self._drop(user_id)

    async def gone(self, user_id: str, linger: float) -> None:
        seen = self._seen.get(user_id)
        if seen is not None:  # online until ``linger`` from now at the latest
            self._seen[user_id] = min(seen, self._clock() - self.name_ttl + linger)

    def _drop(self, user_id: str) -> None:
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
                self._drop(user_id)
