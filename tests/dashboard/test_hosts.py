"""Several hosts (issue 7): two dashboard instances on one Redis, as two machines would run them.

Both instances run in this test process under different host names, so "which one did it" is
checked through what only the owner has: its sampler's frames, its audit log, its topic.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import BEARER, Page, Watcher, logged_in, start_time
from tests.dashboard.host_helpers import hosts, instance, live
from tests.rig import LiveServer, RedisServer, read_events, wait_until

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer().running() as server:
        yield server


@pytest.fixture
def pair(redis: RedisServer, tmp_path: Path) -> Iterator[Callable[..., tuple[LiveServer, LiveServer]]]:
    """``pair(host1, host2)``: two instances, both seeing both hosts; stopped afterwards."""
    with ExitStack() as stack:

        def make(host1: str = "h1", host2: str = "h2") -> tuple[LiveServer, LiveServer]:
            one = stack.enter_context(instance(redis, tmp_path / "one", host1))
            two = stack.enter_context(instance(redis, tmp_path / "two", host2))
            expected = {host1, host2}
            wait_until(lambda: live(one) == expected and live(two) == expected, what="both hosts, on both")
            return one, two

        yield make


def post(srv: LiveServer, host: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    url = f"{srv.url}/dashboard/commands?host={host}"
    return httpx.post(url, json=body, headers=BEARER, timeout=20, **kw)


def test_one_instance_shows_the_other_hosts_frames(pair: Callable[..., tuple[LiveServer, LiveServer]]) -> None:
    one, two = pair()
    listed = hosts(one)
    assert listed["h2"]["owner"] == two.app.state.dashboard.router.instance
    assert listed["h1"]["owner"] == one.app.state.dashboard.router.instance
    events = read_events(one.url + "/dashboard/events?host=h2", n=7, timeout=20)
    assert [e.event for e in events[:3]] == ["hosts", "snapshot", "history"]
    assert {h["name"] for h in json.loads(events[0].data)["hosts"]} == {"h1", "h2"}
    frames = [json.loads(e.data) for e in events if e.event == "metrics"]
    assert len(frames) >= 3
    # Sampled by instance 2: its own sampler kept exactly these frames (instance 1 samples h1 only).
    mine = {p["t"] for p in two.app.state.dashboard.sampler.history}
    theirs = {p["t"] for p in one.app.state.dashboard.sampler.history}
    assert all(f["t"] in mine for f in frames)
    assert not all(f["t"] in theirs for f in frames)
    hist = json.loads(events[2].data)
    assert {p["t"] for p in hist["points"]} <= mine, "the history is h2's, fetched from its owner"
    # The same state as JSON, through instance 1.
    snap = httpx.get(one.url + "/dashboard/snapshot?host=h2", timeout=10).json()
    assert snap["metrics"]["t"] in {p["t"] for p in two.app.state.dashboard.sampler.history}


def test_an_action_for_another_host_runs_on_its_owner(
    pair: Callable[..., tuple[LiveServer, LiveServer]], sleeper: subprocess.Popen[bytes]
) -> None:
    one, two = pair()
    on_h2 = Watcher(two.url + "/dashboard/events")  # h2's topic, read on h2's own instance
    try:
        wait_until(lambda: len(on_h2.events) >= 3, what="h2's stream")
        body = {"action": "terminate", "pid": sleeper.pid, "start_time": start_time(sleeper.pid), "confirm": False}
        r = post(one, "h2", body)
        assert r.status_code == 200, r.text
        assert r.json()["detail"] == "sent SIGTERM; the process has ended"
        assert sleeper.wait(5) == -15
        cid = r.json()["command_id"]
        wait_until(lambda: any(c["command_id"] == cid for c in on_h2.of("command")), what="the command on h2's topic")
    finally:
        on_h2.stop()
    # The owner (instance 2) wrote the audit record, saying where the command came from.
    row = httpx.get(two.url + "/dashboard/audit", timeout=10).json()[0]
    assert (row["command_id"], row["action"], row["result"]) == (cid, "terminate", "succeeded")
    assert row["who"] == f"Bearer token from 127.0.0.1, via instance {one.app.state.dashboard.router.instance}"
    assert httpx.get(one.url + "/dashboard/audit?host=h2", timeout=10).json()[0] == row, "h2's log, via instance 1"
    assert all(r["command_id"] != cid for r in httpx.get(one.url + "/dashboard/audit", timeout=10).json())

    # Refusals keep their status and detail through the route.
    other = subprocess.Popen(["sleep", "300"])
    try:
        real = start_time(other.pid)
        r = post(one, "h2", {"action": "kill", "pid": 1, "start_time": start_time(1), "confirm": False})
        assert (r.status_code, r.json()["detail"]) == (403, "refusing to kill PID 1: it is " + PID1)
        assert r.json()["extra"]["outcome"] == "refused"
        r = post(one, "h2", {"action": "kill", "pid": other.pid, "start_time": real - 5, "confirm": False})
        assert r.status_code == 409
        assert "reused" in r.json()["detail"]
        r = post(one, "h2", {"action": "kill", "pid": other.pid, "start_time": real})
        assert r.status_code == 422
        assert "must be confirmed" in r.json()["detail"]
        r = post(one, "h2", {"action": "kill", "pid": other.pid, "start_time": real, "client_id": "nobody"})
        assert (r.status_code, r.json()["detail"]) == (
            422,
            "no page session with client_id 'nobody' is connected to confirm kill",
        )
        assert post(one, "h2", {"action": "explode"}).status_code == 422
        r = httpx.post(f"{one.url}/dashboard/commands?host=h2", json={"action": "pause_sampling"}, timeout=10)
        assert r.status_code == 401
        assert other.poll() is None

        # A page connected to instance 1 confirms an action that instance 2 runs: the question
        # travels from the owner to the instance holding the page's session, and back.
        for answer, status in (("no", 409), ("yes", 200)):
            page = Page(one.url, answer, headers=logged_in(one.url))
            body = {"action": "suspend", "pid": other.pid, "start_time": real, "client_id": page.wait_ready()}
            r = post(one, "h2", body)
            page.watcher.join(5)
            assert r.status_code == status, r.text
            assert page.requests[0]["params"]["target"]["pid"] == other.pid
        assert r.json()["detail"] == "sent SIGSTOP; the process is stopped until resumed"
        assert httpx.get(two.url + "/dashboard/audit", timeout=10).json()[0]["result"] == "succeeded"
        # A page whose session is on instance 2 (another worker behind the same address), a POST
        # that lands on instance 1: the session is found where it is.
        page = Page(two.url, "yes", headers=logged_in(two.url))
        body = {"action": "resume", "pid": other.pid, "start_time": real, "client_id": page.wait_ready()}
        assert post(one, "h2", body).status_code == 200
        body = {"action": "terminate", "pid": other.pid, "start_time": real, "client_id": page.client_id}
        r = post(one, "h1", body)
        assert r.status_code == 200, r.text
        assert other.wait(5) == -15
        page.watcher.stop()
    finally:
        if other.poll() is None:
            other.kill()
        other.wait(5)
    # Settings go to the owner too: h2's sampler, not h1's.
    assert post(one, "h2", {"action": "set_interval", "seconds": 0.5}).status_code == 200
    assert two.app.state.dashboard.sampler.interval == 0.5
    assert one.app.state.dashboard.sampler.interval == 0.25


PID1 = "PID 1 (init): signalling it would bring the machine or container down"


def test_a_host_that_stops_is_shown_gone_and_its_actions_are_503(
    pair: Callable[..., tuple[LiveServer, LiveServer]],
) -> None:
    one, two = pair()
    watcher = Watcher(one.url + "/dashboard/events?host=h2")
    try:
        wait_until(lambda: len(watcher.of("metrics")) >= 1, what="h2's frames through instance 1")
        two.stop()
        wait_until(lambda: live(one) == {"h1"}, what="h2 gone", timeout=15)
        wait_until(lambda: bool(watcher.of("gone")), what="the gone event", timeout=15)
    finally:
        watcher.stop()
    assert watcher.of("gone") == [{"host": "h2", "detail": "host 'h2' went away: its dashboard stopped"}]
    assert hosts(one)["h2"]["live"] is False
    r = post(one, "h2", {"action": "pause_sampling"})
    assert r.status_code == 503
    assert r.json()["detail"].startswith("host 'h2' is gone: its dashboard has not been heard from since ")
    assert r.headers["retry-after"] == "5"
    assert httpx.get(one.url + "/dashboard/events?host=h2", timeout=10).status_code == 503
    assert httpx.get(one.url + "/dashboard/snapshot?host=h2", timeout=10).status_code == 503
    r = httpx.get(one.url + "/dashboard/snapshot?host=h9", timeout=10)
    assert (r.status_code, r.json()["detail"]) == (404, "no host named 'h9'; the hosts are: h1")
    r = httpx.get(one.url + "/dashboard/snapshot?host=no%20such", timeout=10)
    assert r.status_code == 400
    assert "host name 'no such'" in r.json()["detail"]
    # It comes back (a restart on the same port): live again, and streams from it flow again.
    two.start()
    wait_until(lambda: live(one) == {"h1", "h2"}, what="h2 back")
    events = read_events(one.url + "/dashboard/events?host=h2", n=4, timeout=20)
    assert events[-1].event == "metrics"


def test_instances_of_one_host_elect_one_sampler_and_hand_over(
    pair: Callable[..., tuple[LiveServer, LiveServer]],
) -> None:
    """``--workers 2`` on one machine: two instances, one host name, one psutil sampler."""
    one, two = pair("same", "same")
    assert hosts(one)["same"]["instances"] == 2
    first, second = one.app.state.dashboard.sampler, two.app.state.dashboard.sampler
    assert first.running, "the instance that started first samples"
    assert not second.running
    watcher = Watcher(two.url + "/dashboard/events")
    try:
        wait_until(lambda: len(watcher.of("metrics")) >= 2, what="frames through the other instance")
        one.stop()
        wait_until(lambda: second.running, what="the hand-over", timeout=15)
        wait_until(lambda: second.seq >= 2, what="frames from the new owner")
        wait_until(lambda: bool(watcher.of("settings")), what="the viewers told of the new owner's settings")
    finally:
        watcher.stop()
    told = watcher.of("settings")[0]
    assert told["detail"] == f"host 'same' is now sampled by instance {two.app.state.dashboard.router.instance}"
    assert told["version"] > 1000, "above any version the previous owner reached: the page does not ignore it"
    assert hosts(two) == {
        "same": {"name": "same", "live": True, "owner": two.app.state.dashboard.router.instance, "instances": 1}
    }
    events = read_events(two.url + "/dashboard/events", n=5, timeout=20)
    assert events[-1].event == "metrics"
    assert json.loads(events[-1].data)["t"] in {p["t"] for p in second.history}
