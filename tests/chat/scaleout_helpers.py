"""Helpers for chat instances on one Redis: the instances, a person on another instance, a follower thread."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from chat import ChatSettings, create_app
from tests.chat.stream_helpers import Watch, data
from tests.rig import LiveServer

from .conftest import Person

EVENTS = "/chat/rooms/general/events"


MESSAGES = "/chat/rooms/general/messages"


STORED = {"message", "edit", "delete", "reaction", "created"}


@contextlib.contextmanager
def instances(url: str, tmp_path: Path, settings: ChatSettings, n: int = 2) -> Iterator[list[LiveServer]]:
    """``n`` chat instances (each its own app, event loop and data dir) on one Redis."""
    servers: list[LiveServer] = []
    try:
        for i in range(n):
            d = tmp_path / f"instance{i}"
            servers.append(LiveServer(functools.partial(create_app, d, settings=settings, backend=url)).start())
        yield servers
    finally:
        for srv in servers:
            if srv.thread is not None and srv.thread.is_alive():
                srv.stop()


def on(person: Person, client: httpx.Client) -> Person:
    """The same person (same cookie), talking to another instance."""
    other = copy.copy(person)
    other.client = client
    return other


class Follower(threading.Thread):
    """Reads a room stream in the background, reconnecting (to the next base URL in turn) with
    its Last-Event-ID when the connection drops; collects stored events."""

    def __init__(self, bases: list[str], person: Person, last_id: str, stop_text: str) -> None:
        super().__init__(daemon=True)
        self.bases, self.person, self.last_id, self.stop_text = bases, person, last_id, stop_text
        self.events: list[tuple[str, str, str]] = []
        self.reconnects = 0
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 60
        i = 0
        try:
            while time.monotonic() < deadline:
                try:
                    watch = Watch(self.bases[i % len(self.bases)], EVENTS, self.person, self.last_id)
                except httpx.HTTPError:
                    time.sleep(0.2)
                    i += 1
                    continue
                try:
                    while True:
                        (sse,) = watch.next() or (None,)
                        if sse is None:
                            break  # the server ended the stream
                        if sse.event in STORED:
                            self.events.append((sse.id, sse.event, sse.data))
                            self.last_id = sse.id
                            if sse.event == "message" and data(sse)["text"] == self.stop_text:
                                return
                except (httpx.HTTPError, ValueError):
                    pass  # the instance died under us
                finally:
                    with contextlib.suppress(Exception):
                        watch.close()
                self.reconnects += 1
                i += 1
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.done.set()


def messages_of(events: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    return [json.loads(d) for _, e, d in events if e == "message"]
