"""Issue 13 part 4: the instance that runs a command is killed with -9 while others watch it.

Two real ``python -m remote_exec`` processes (separate data dirs, as on two hosts) on one real
redis-server. A viewer on instance B watches a run of instance A; A gets SIGKILL. What
remote_exec/README.md promises: the watcher gets ``unreachable`` once A is forgotten (three
missed 2 s beats), then the run's ``exit`` with ``status: "lost"`` (A's process is gone: B sees
its pid is dead); ``GET /exec/runs`` on B keeps listing the run; the viewer token and the login
session made on A work on B; nothing answers 5xx, and B's log has no traceback.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.product.rig import EXEC_TOKEN, Product
from tests.remote_exec.scaleout_helpers import kill_leftovers
from tests.rig import RedisServer, wait_until

from .helpers import Watcher, output

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TICKER = "import time\nfor i in range(900):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.1)\n"


def _policy(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[commands]\nallow = ["python3"]\n[cwd]\nallow = ["{work}"]\ndefault = "{work}"\n[runs]\nkill_grace_s = 0.5\n'
    )
    return policy


def test_a_killed_owner_s_run_is_reported_unreachable_then_lost_on_the_other_instance(tmp_path: Path) -> None:
    op = {"Authorization": f"Bearer {EXEC_TOKEN}"}
    policy = _policy(tmp_path)
    with RedisServer().running() as redis:
        args = ("--backend", redis.url, "--policy", str(policy), "--log-level", "warning")
        a = Product(tmp_path / "a", *args, module="remote_exec").start("/exec/")
        b = Product(tmp_path / "b", *args, module="remote_exec").start("/exec/")
        statuses: list[tuple[str, int]] = []

        def get(url: str, path: str, **kw: object) -> httpx.Response:
            r = httpx.get(url + path, timeout=10, **kw)  # type: ignore[arg-type]
            statuses.append((path, r.status_code))
            return r

        watchers: list[Watcher] = []
        try:
            wait_until(
                lambda: all(len(get(p.url, "/exec/runs", headers=op).json()["instances"]) == 2 for p in (a, b)),
                timeout=20,
                what="the two instances to see each other",
            )
            started = httpx.post(a.url + "/exec/runs", json={"argv": ["python3", "-c", TICKER]}, headers=op, timeout=10)
            assert started.status_code == 201, started.text
            rid = started.json()["id"]
            minted = httpx.post(a.url + "/exec/tokens", json={"label": "guest"}, headers=op, timeout=10)
            assert minted.status_code == 201, minted.text
            token = minted.json()["token"]
            with httpx.Client(base_url=a.url, headers={"Origin": a.url}) as page:
                assert page.post("/exec/login", json={"token": token}).status_code == 200
                sid = page.cookies["exec_session"]
            watchers.append(Watcher(b.url, f"/exec/runs/{rid}/events", token=token))
            watchers.append(Watcher(b.url, f"/exec/runs/{rid}/events", cookies={"exec_session": sid}))
            watchers.append(Watcher(b.url, "/exec/events", token=EXEC_TOKEN))
            for w in watchers:
                assert w.opened.wait(10)
                assert w.status == 200
            watchers[0].wait_for("stdout", 10)
            time.sleep(1.0)

            killed = a.signal(signal.SIGKILL)
            a.wait(10)
            for w in watchers[:2]:
                at, event = w.wait_for("unreachable", 15)
                took = at - killed
                assert took <= 12, f"unreachable came {took:.1f} s after the kill"
                assert a_instance(rid) in json.loads(event.data)["detail"]
                lost_at, exit_event = w.wait_for("exit", 15)
                info = json.loads(exit_event.data)
                assert info["status"] == "lost"
                assert "stopped answering" in info["reason"]
                assert lost_at >= at
                assert w.done.wait(5), "the stream did not end after exit"
                assert w.error is None
                print(f"unreachable {took:.1f} s and lost {lost_at - killed:.1f} s after the kill")
            # The run list stream was told too.
            wait_until(
                lambda: any(
                    e.event == "run" and json.loads(e.data)["id"] == rid and json.loads(e.data)["status"] == "lost"
                    for _, e in watchers[2].events
                ),
                timeout=5,
                what="the run list to hear the run is lost",
            )
            # Still listed on B, with what happened to it.
            listed = {r["id"]: r for r in get(b.url, "/exec/runs", headers=op).json()["runs"]}
            assert rid in listed, "the dead owner's run vanished from the list"
            assert listed[rid]["status"] == "lost"
            assert listed[rid]["instance"] == a_instance(rid)
            # The viewer token and the session made on A, on B: what B has of the run.
            with httpx.Client(base_url=b.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as guest:
                me = guest.get("/exec/me")
                assert me.status_code == 200, me.text
                assert me.json()["role"] == "viewer"
                assert guest.get(f"/exec/runs/{rid}").json()["status"] == "lost"
                raw = guest.get(f"/exec/runs/{rid}/output")
                assert raw.status_code == 200
                assert raw.content.startswith(b"tick 0\ntick 1\n")
                statuses += [("/exec/me", me.status_code), ("/output", raw.status_code)]
            with httpx.Client(base_url=b.url, cookies={"exec_session": sid}, timeout=10) as browser:
                assert browser.get("/exec/me").json()["role"] == "viewer"
                assert [r["id"] for r in browser.get("/exec/runs").json()["runs"]] == [rid]
            replay = Watcher(b.url, f"/exec/runs/{rid}/events", token=token)
            watchers.append(replay)
            assert replay.done.wait(10)
            names = replay.names()
            assert names.count("exit") == 1
            assert b"tick 0\n" in output([e for _, e in replay.events])

            # A comes back on its data dir: the run stays lost, with one exit (not two).
            a2 = Product(tmp_path / "a", *args, module="remote_exec", port=a.port).start("/exec/")
            try:
                wait_until(
                    lambda: len(get(b.url, "/exec/runs", headers=op).json()["instances"]) == 2,
                    timeout=20,
                    what="A back",
                )
                assert get(a2.url, f"/exec/runs/{rid}", headers=op).json()["status"] == "lost"
                again = Watcher(b.url, f"/exec/runs/{rid}/events", token=token)
                watchers.append(again)
                assert again.done.wait(10)
                assert again.names().count("exit") == 1
            finally:
                a2.stop()
            assert not [s for s in statuses if s[1] >= 500], statuses
            assert "Traceback" not in b.output(), b.output()[-3000:]
        finally:
            for w in watchers:
                w.close()
            a.stop()
            b.stop()
            kill_leftovers(tmp_path / "a", tmp_path / "b")


def a_instance(run_id: str) -> str:
    return run_id.rpartition(".")[0]
