"""The dashboard over a real uvicorn: stream shape, one sampler for all viewers, guarded control."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import BEARER, TOKEN, Page, Watcher, logged_in, start_time
from tests.rig import LiveServer, read_events, wait_until


def post(srv: LiveServer, body: Any, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
    return httpx.post(srv.url + "/dashboard/commands", json=body, headers=headers, timeout=20, **kw)


# -- reading ------------------------------------------------------------------------------------


def test_stream_starts_with_the_latest_state_then_live_frames(dash: LiveServer) -> None:
    wait_until(lambda: httpx.get(dash.url + "/dashboard/snapshot").json()["metrics"] is not None, what="a frame")
    events = read_events(dash.url + "/dashboard/events", n=5)
    assert [e.event for e in events] == ["hosts", "snapshot", "history", "metrics", "metrics"]
    assert all(e.id == "" for e in events), "snapshots and frames carry no id: they are never replayed"
    hosts = json.loads(events[0].data)
    assert [h["name"] for h in hosts["hosts"]] == [hosts["self"]], "one instance: one host, its own"
    snap, hist = json.loads(events[1].data), json.loads(events[2].data)
    frames = [json.loads(e.data) for e in events[3:]]
    assert snap["settings"]["interval"] == 0.25
    assert snap["metrics"]["seq"] < frames[0]["seq"] < frames[1]["seq"]
    assert hist["points"], "a new viewer's charts start full"
    assert hist["points"][-1]["t"] <= frames[0]["t"]
    for key in ("cpu", "mem", "swap", "rx", "tx", "rd", "wr", "load"):
        assert key in hist["points"][-1]


def test_snapshot_and_history_as_json(dash: LiveServer) -> None:
    snap = httpx.get(dash.url + "/dashboard/snapshot").json()
    assert set(snap) == {"metrics", "settings", "alerts"}
    assert {"total", "per_core", "count"} <= set(snap["metrics"]["cpu"])
    hist = httpx.get(dash.url + "/dashboard/history").json()
    assert hist["seconds"] == 300
    ts = [p["t"] for p in hist["points"]]
    assert ts == sorted(ts)


# -- who may act --------------------------------------------------------------------------------------


def test_control_needs_the_token(dash: LiveServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-000000"}):
        r = post(dash, {"action": "pause_sampling"}, headers)
        assert r.status_code == 401
        assert "control token" in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(dash.url + "/dashboard/snapshot").json()["settings"]["paused"] is False
    assert httpx.get(dash.url + "/dashboard/whoami").json() == {"can_control": False, "via": None}


def test_cross_origin_posts_are_refused_even_with_the_token(dash: LiveServer) -> None:
    evil = {**BEARER, "Origin": "http://evil.example"}
    r = post(dash, {"action": "pause_sampling"}, evil)
    assert r.status_code == 403
    assert "cross-origin" in r.json()["detail"]
    r = httpx.post(dash.url + "/dashboard/login", json={"token": TOKEN}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert "set-cookie" not in r.headers
    same = {**BEARER, "Origin": dash.url}
    assert post(dash, {"action": "set_interval", "seconds": 0.25}, same).status_code == 200


@pytest.mark.parametrize("seconds", [0.1, 0, 61, "fast", None])
def test_bad_interval_is_422(dash: LiveServer, seconds: Any) -> None:
    r = post(dash, {"action": "set_interval", "seconds": seconds}, BEARER)
    assert r.status_code == 422
    assert "0.25" in r.json()["detail"]


def test_login_cookie_is_httponly_and_allows_control(dash: LiveServer) -> None:
    with httpx.Client(base_url=dash.url, timeout=10) as c:
        assert c.post("/dashboard/login", json={"token": "nope-nope-nope"}).status_code == 401
        r = c.post("/dashboard/login", json={"token": TOKEN})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "path=/;" in cookie  # the whole origin: the shared connection (/sse/mux) carries it
        assert TOKEN.lower() not in cookie, "the cookie is not the token"
        assert c.get("/dashboard/whoami").json() == {"can_control": True, "via": "cookie"}
        assert c.post("/dashboard/commands", json={"action": "set_interval", "seconds": 0.25}).status_code == 200
        c.post("/dashboard/logout")
        assert c.post("/dashboard/commands", json={"action": "set_interval", "seconds": 0.25}).status_code == 401


# -- process actions ------------------------------------------------------------------------------------


def audit(srv: LiveServer) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = httpx.get(srv.url + "/dashboard/audit").json()
    return rows


def test_pid_guards(dash: LiveServer, sleeper: subprocess.Popen[bytes]) -> None:
    import os

    real = start_time(sleeper.pid)
    r = post(dash, {"action": "kill", "pid": sleeper.pid, "start_time": real - 5, "confirm": False}, BEARER)
    assert r.status_code == 409
    assert "reused" in r.json()["detail"]
    assert r.json()["extra"]["outcome"] == "refused"
    assert sleeper.poll() is None
    # The server runs in this test process: itself and its parent are refused, like PID 1.
    for pid in (1, os.getpid(), os.getppid()):
        r = post(dash, {"action": "kill", "pid": pid, "start_time": start_time(pid), "confirm": False}, BEARER)
        assert r.status_code == 403, pid
        assert f"refusing to kill PID {pid}" in r.json()["detail"]
    row = audit(dash)[0]
    assert (row["action"], row["result"], row["target"]) == ("kill", "refused", f"PID {os.getppid()}")


def test_bearer_client_may_skip_confirmation(dash: LiveServer, sleeper: subprocess.Popen[bytes]) -> None:
    body = {"action": "terminate", "pid": sleeper.pid, "start_time": start_time(sleeper.pid), "confirm": False}
    watcher = Watcher(dash.url + "/dashboard/events")
    try:
        wait_until(lambda: len(watcher.events) >= 2, what="the stream")
        r = post(dash, body, BEARER)
        assert r.status_code == 200, r.text
        assert r.json()["detail"] == "sent SIGTERM; the process has ended"
        assert sleeper.wait(5) == -15
        wait_until(lambda: any(c["phase"] == "succeeded" for c in watcher.of("command")), what="command event")
    finally:
        watcher.stop()
    phases = [c["phase"] for c in watcher.of("command") if c["command_id"] == r.json()["command_id"]]
    assert phases == ["started", "succeeded"]
    row = audit(dash)[0]
    assert row["result"] == "succeeded"
    assert row["who"] == "Bearer token from 127.0.0.1"
    assert row["target"].startswith(f"PID {sleeper.pid} sleep (root")


def test_browser_login_can_never_skip_confirmation(dash: LiveServer, sleeper: subprocess.Popen[bytes]) -> None:
    with httpx.Client(base_url=dash.url, timeout=10) as c:
        c.post("/dashboard/login", json={"token": TOKEN}).raise_for_status()
        body = {"action": "kill", "pid": sleeper.pid, "start_time": start_time(sleeper.pid), "confirm": False}
        r = c.post("/dashboard/commands", json=body)
    assert r.status_code == 422
    assert "must be confirmed" in r.json()["detail"]
    assert sleeper.poll() is None


@pytest.mark.parametrize("answer", ["no", "silent"])
def test_no_yes_means_nothing_happens(dash: LiveServer, sleeper: subprocess.Popen[bytes], answer: str) -> None:
    page = Page(dash.url, answer, headers=logged_in(dash.url))
    client_id = page.wait_ready()
    body = {"action": "kill", "pid": sleeper.pid, "start_time": start_time(sleeper.pid), "client_id": client_id}
    r = post(dash, body, BEARER)
    page.watcher.join(5)
    assert r.status_code == 409
    assert sleeper.poll() is None
    req = page.requests[0]
    assert req["method"] == "confirm"
    assert req["params"]["target"]["pid"] == sleeper.pid
    assert req["params"]["question"].startswith(f"kill PID {sleeper.pid} sleep (root, started ")
    assert req["deadline"] > time.time() - 5
    if answer == "no":
        assert r.json()["detail"] == "not done: declined by the test"
        assert audit(dash)[0]["result"] == "declined"
    else:
        assert r.json()["detail"] == "not done: no confirmation within 1.5 s"
        assert page.cancels[0]["id"] == req["id"], "the page is told to drop the question"
        assert audit(dash)[0]["result"] == "unanswered"


def test_confirmed_yes_acts(dash: LiveServer, sleeper: subprocess.Popen[bytes]) -> None:
    page = Page(dash.url, "yes", headers=logged_in(dash.url))
    client_id = page.wait_ready()
    body = {"action": "suspend", "pid": sleeper.pid, "start_time": start_time(sleeper.pid), "client_id": client_id}
    r = post(dash, body, BEARER)
    assert r.status_code == 200, r.text
    assert r.json()["detail"] == "sent SIGSTOP; the process is stopped until resumed"
    row = audit(dash)[0]
    assert row["who"] == f"Bearer token from 127.0.0.1, page {client_id}"
    # resume is not dangerous: no question asked
    body = {"action": "resume", "pid": sleeper.pid, "start_time": start_time(sleeper.pid)}
    assert post(dash, body, BEARER).status_code == 200


def test_unknown_page_session_is_422(dash: LiveServer, sleeper: subprocess.Popen[bytes]) -> None:
    body = {"action": "kill", "pid": sleeper.pid, "start_time": start_time(sleeper.pid), "client_id": "nobody"}
    r = post(dash, body, BEARER)
    assert r.status_code == 422
    assert "no page session" in r.json()["detail"]


# -- events are replayed, frames are not -----------------------------------------------------------------


def test_commands_and_settings_are_replayed_on_resume_frames_are_not(dash: LiveServer) -> None:
    def done(e: Any) -> bool:
        return bool(e.event == "command" and json.loads(e.data)["phase"] == "succeeded")

    first = Watcher(dash.url + "/dashboard/events")
    try:
        wait_until(lambda: len(first.events) >= 2, what="the stream")
        assert post(dash, {"action": "set_interval", "seconds": 0.5}, BEARER).status_code == 200
        wait_until(lambda: any(done(e) for e in first.events), what="the command's last event")
    finally:
        first.stop()
    last_id = next(e.id for e in first.events if done(e))
    assert last_id
    # While away: pause, back to 0.25 s, resume.
    assert post(dash, {"action": "pause_sampling"}, BEARER).status_code == 200
    assert post(dash, {"action": "set_interval", "seconds": 0.25}, BEARER).status_code == 200
    time.sleep(0.3)
    assert post(dash, {"action": "resume_sampling"}, BEARER).status_code == 200
    events = read_events(dash.url + "/dashboard/events", n=13, headers={"Last-Event-ID": last_id})[1:]  # not hosts
    names = [e.event for e in events]
    assert names[:2] == ["snapshot", "history"]
    assert names[2:11] == ["command", "settings", "command"] * 3, "missed events, in order, no stale frames"
    settings = [json.loads(e.data) for e in events[2:11] if e.event == "settings"]
    assert [(s["paused"], s["interval"]) for s in settings] == [(True, 0.5), (True, 0.25), (False, 0.25)]
    assert names[11] == "metrics"
    snap = json.loads(events[0].data)["settings"]
    assert (snap["paused"], snap["interval"]) == (False, 0.25)  # the snapshot is the latest state


def test_alert_rules_fire_and_resolve_over_the_stream(dash: LiveServer) -> None:
    watcher = Watcher(dash.url + "/dashboard/events")
    try:
        wait_until(lambda: len(watcher.events) >= 2, what="the stream")
        rules = [{"metric": "memory", "above": 0.001, "for_s": 0.5}]
        r = post(dash, {"action": "set_rules", "rules": rules}, BEARER)
        assert r.status_code == 200
        assert r.json()["detail"] == "alert rules: Memory > 0.001 % for 0.5 s"
        wait_until(lambda: bool(watcher.of("alert")), what="the alert")
        alert = watcher.of("alert")[0]
        assert alert["at"] - alert["since"] >= 0.5
        assert (
            httpx.get(dash.url + "/dashboard/snapshot").json()["alerts"]["active"][0]["alert_id"] == alert["alert_id"]
        )
        assert post(dash, {"action": "set_rules", "rules": []}, BEARER).status_code == 200
        wait_until(lambda: bool(watcher.of("resolved")), what="the resolution")
    finally:
        watcher.stop()
    resolved = watcher.of("resolved")[0]
    assert (resolved["alert_id"], resolved["reason"]) == (alert["alert_id"], "rule removed")
    assert all(e.id for e in watcher.events if e.event in ("alert", "resolved")), "stored: replayed on resume"
    assert post(dash, {"action": "set_rules", "rules": [{"metric": "cpu", "above": 200}]}, BEARER).status_code == 422


def test_viewers_never_see_a_targets_command_line(dash: LiveServer) -> None:
    """Issue 14.10: an action's target goes to every viewer in ``command`` events (and replays);
    its command line may hold a secret, so only the controller (the question, the POST's answer)
    gets it."""
    secret = "--api-key=s3cr3t-0123456789"
    child = subprocess.Popen(["python3", "-c", "import time; time.sleep(60)", secret])
    viewer = Watcher(dash.url + "/dashboard/events")
    try:
        wait_until(lambda: len(viewer.events) >= 3, what="the viewer's stream")
        page = Page(dash.url, "yes", headers=logged_in(dash.url))
        body = {
            "action": "terminate",
            "pid": child.pid,
            "start_time": start_time(child.pid),
            "client_id": page.wait_ready(),
        }
        r = post(dash, body, BEARER)
        assert r.status_code == 200, r.text
        assert child.wait(5) == -15
        assert secret in r.json()["target"]["cmdline"], "the controller sees it"
        assert secret in page.requests[0]["params"]["target"]["cmdline"], "and so does its confirming page"
        cid = r.json()["command_id"]
        wait_until(lambda: any(c["command_id"] == cid and c["phase"] == "succeeded" for c in viewer.of("command")))
        seen = [e.data for e in viewer.events] + [json.dumps(row) for row in audit(dash)]
        assert not any(secret in text for text in seen), "a viewer saw the command line"
        assert all("cmdline" not in (c["target"] or {}) for c in viewer.of("command"))
    finally:
        viewer.stop()
        if child.poll() is None:
            child.kill()
        child.wait(5)
