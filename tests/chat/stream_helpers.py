"""Helpers for reading chat streams: a Watch on a room's events, an event's JSON data."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, connect_sse

from .conftest import Person


class Watch:
    """An open event stream, read a few events at a time (what was sent meanwhile is buffered)."""

    def __init__(self, base: str, path: str, person: Person, last_id: str | None = None) -> None:
        self._stack = contextlib.ExitStack()
        client = self._stack.enter_context(httpx.Client(base_url=base, timeout=httpx.Timeout(10)))
        headers = {"Cookie": f"chat_session={person.cookie}"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        source = self._stack.enter_context(connect_sse(client, "GET", path, headers=headers))
        source.response.raise_for_status()
        self._events = source.iter_sse()

    def next(self, n: int = 1) -> list[ServerSentEvent]:
        out: list[ServerSentEvent] = []
        for sse in self._events:
            if sse.event == "message" and not sse.data and not sse.id:
                continue  # a comment-only block (heartbeat)
            out.append(sse)
            if len(out) == n:
                break
        return out

    def of(self, event: str, n: int, limit: int = 100) -> list[ServerSentEvent]:
        """The next ``n`` events named ``event``, skipping others."""
        out: list[ServerSentEvent] = []
        while len(out) < n:
            out.append(self.until(event, limit))
        return out

    def until(self, event: str, limit: int = 50) -> ServerSentEvent:
        for _ in range(limit):
            (sse,) = self.next()
            if sse.event == event:
                return sse
        raise AssertionError(f"no {event!r} event within {limit} events")

    def close(self) -> None:
        self._stack.close()


def data(sse: ServerSentEvent) -> Any:
    return json.loads(sse.data)
