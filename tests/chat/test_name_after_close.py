"""A closed browser's name is free soon after it leaves the room (issue 18), on both stores.

Before, a name stayed reserved ``name_ttl`` (60 s) after its holder's last request or stream, so
after closing the browser "the name 'alice' is taken by someone online" answered for a minute
with nobody online. Now it is free once the presence grace has run out (SQLite), or within two
heartbeats after that (Redis, where another instance may still have the person in a room).
Real uvicorn, real streams; short grace and heartbeat so the test is quick, ``name_ttl`` default.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat import ChatSettings, create_app
from tests.chat.stream_helpers import Watch
from tests.rig import LiveServer, RedisServer

from .conftest import Person

GRACE = 1.0
PRESENCE_TTL = 3.0  # Redis: heartbeats every 1 s, so the name lingers 2 s there
LINGER = {"sqlite": 0.0, "redis": 2 * PRESENCE_TTL / 3}


@contextlib.contextmanager
def instances(kind: str, tmp_path: Path) -> Iterator[list[LiveServer]]:
    settings = ChatSettings(presence_grace=GRACE, presence_ttl=PRESENCE_TTL)
    assert settings.name_ttl == 60.0
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(RedisServer().running()).url if kind == "redis" else None
        out = []
        for i in range(2 if kind == "redis" else 1):
            d = tmp_path / f"i{i}"
            out.append(
                stack.enter_context(LiveServer(functools.partial(create_app, d, settings=settings, backend=url)))
            )
        yield out


def join(base: str, name: str) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=10) as c:
        return c.post("/chat/session", json={"name": name})


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_the_name_is_free_soon_after_its_last_stream_closes(kind: str, tmp_path: Path) -> None:
    with instances(kind, tmp_path) as servers:
        first, other = servers[0].url, servers[-1].url  # on Redis, the newcomer is on another instance
        with httpx.Client(base_url=first, timeout=10) as browser:
            alice = Person(browser, "alice")
            assert alice.get("/chat/rooms").status_code == 200  # a request just before closing
        tab = Watch(first, "/chat/rooms/general/events", alice)
        tab.until("presence")
        # While the tab is open, and during the grace period after it closes, the name is hers.
        assert join(other, "alice").status_code == 409
        tab.close()  # the browser closes
        closed = time.monotonic()
        refused = join(other, "alice")
        assert refused.status_code == 409
        assert "taken by someone online" in refused.json()["detail"]
        while (r := join(other, "alice")).status_code == 409:
            assert time.monotonic() - closed < GRACE + LINGER[kind] + 3, "the name is still taken"
            time.sleep(0.1)
        free_after = time.monotonic() - closed
        assert r.status_code == 200
        assert free_after >= GRACE - 0.2  # not before her grace period is over
        print(f"{kind}: name free {free_after:.2f} s after the stream closed (grace {GRACE} s)")


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_the_name_stays_while_another_room_is_open(kind: str, tmp_path: Path) -> None:
    """Leaving one room frees nothing while she is in another (on Redis: on another instance,
    whose heartbeats keep the name hers past the shortened TTL)."""
    with instances(kind, tmp_path) as servers:
        first, other = servers[0].url, servers[-1].url
        with httpx.Client(base_url=first, timeout=10) as browser:
            alice = Person(browser, "alice")
        stays = Watch(other, "/chat/rooms/random/events", alice)
        stays.until("presence")
        tab = Watch(first, "/chat/rooms/general/events", alice)
        tab.until("presence")
        tab.close()
        time.sleep(GRACE + LINGER[kind] + 1.5)
        assert join(other, "alice").status_code == 409
        assert join(first, "alice").status_code == 409
        stays.close()
