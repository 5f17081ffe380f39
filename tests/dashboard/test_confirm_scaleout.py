"""Confirmations across instances (issue 13): a page whose session stream reconnects to another
instance keeps its session (it moves, as on ``/bidi/``), and a command sent through the first
instance asks the page where it now is.

Two dashboard instances on one real redis-server, in this process; a real child process to act on.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.dashboard.conftest import BEARER, Page, Watcher, logged_in, start_time
from tests.dashboard.host_helpers import instance, live
from tests.rig import LiveServer, RedisServer, wait_until

pytestmark = pytest.mark.redis

CONFIRM_S = 3


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two instances of one host name (two workers of one machine): instance 1 owns it."""
    with RedisServer().running() as redis, ExitStack() as stack:
        one = stack.enter_context(instance(redis, tmp_path / "one", "h1", confirm_timeout=CONFIRM_S))
        two = stack.enter_context(instance(redis, tmp_path / "two", "h1", confirm_timeout=CONFIRM_S))
        wait_until(
            lambda: (
                len(one.app.state.dashboard.router.peers()) == 2 and len(two.app.state.dashboard.router.peers()) == 2
            ),
            what="both instances, on both",
        )
        assert live(one) == live(two) == {"h1"}
        yield one, two


def test_a_page_that_reconnects_to_another_instance_confirms_there(
    two: tuple[LiveServer, LiveServer],
) -> None:
    one, other = two
    child = subprocess.Popen(["sleep", "60"])
    try:
        # The page's session stream opens on instance 1, drops, and comes back on instance 2
        # (behind one address, a reconnect may land on any worker) with its id and token.
        # (Its browser logged in on instance 1: the login session is in Redis, valid on both.)
        cookie = logged_in(one.url)
        first = Watcher(
            one.url + "/dashboard/session/events", on_event=lambda sse: sse.event != "session", headers=cookie
        )
        first.join(10)
        hello = first.of("session")[0]
        cid, token = hello["client_id"], hello["token"]
        wait_until(lambda: one.app.state.dashboard.correlator.sessions()[0]["connected"] is False, what="the drop")
        page = Page(other.url, "yes", query=f"client_id={cid}&token={token}", headers=cookie)
        assert page.wait_ready() == cid

        # A terminate sent through instance 1 (which owns the host): the live page on instance 2
        # is asked, confirms, and the process ends.
        body = {"action": "terminate", "pid": child.pid, "start_time": start_time(child.pid), "client_id": cid}
        began = time.monotonic()
        r = httpx.post(one.url + "/dashboard/commands", json=body, headers=BEARER, timeout=30)
        took = time.monotonic() - began
        assert r.status_code == 200, r.text
        assert r.json()["detail"] == "sent SIGTERM; the process has ended"
        assert took < CONFIRM_S, f"answered by the live page, not at the deadline ({took:.1f} s)"
        assert child.wait(5) == -15
        assert [q["params"]["target"]["pid"] for q in page.requests] == [child.pid]
        assert page.token == token, "the same session, moved: not a new token"
        assert not one.app.state.dashboard.correlator.has_session(cid), "instance 1 no longer keeps a stale copy"
        assert other.app.state.dashboard.correlator.has_session(cid)
        page.watcher.join(5)
        row = httpx.get(one.url + "/dashboard/audit", timeout=10).json()[0]
        assert (row["action"], row["result"]) == ("terminate", "succeeded")
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(5)
