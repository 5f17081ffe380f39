"""Several instances on one Redis (issue 7): a run lives on the instance that started it, any
instance serves its output, and input and signals sent to any instance reach it.

Two real uvicorn servers, each with its own data dir (as on two hosts), share a real
redis-server; a client of each watches the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import ServerSentEvent

from remote_exec import Policy, create_app
from remote_exec.store import RunRow, Store
from tests.remote_exec.scaleout_helpers import kill_leftovers
from tests.rig import LiveServer, RedisServer, free_port, wait_until

from .helpers import TOKEN, ExecClient, Watcher, alive, make_policy, output, read_until

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]


def _sees_both(client: ExecClient) -> bool:
    return len(client.http.get("/exec/runs").json()["instances"]) == 2


def instance(data_dir: Path, policy: Policy, redis: RedisServer, name: str) -> LiveServer:
    return LiveServer(
        lambda: create_app(data_dir, token=TOKEN, policy=policy, backend=redis.url, instance=name, beat=0.3)
    )


def run_pids(data: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(data / "exec.sqlite3")) as conn:
        return [pid for (pid,) in conn.execute("SELECT pid FROM runs WHERE pid IS NOT NULL")]


@pytest.fixture
def pair(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[LiveServer, LiveServer, ExecClient, ExecClient]]:
    work = tmp_path / "work"
    work.mkdir()
    policy = make_policy(work)
    data1, data2 = tmp_path / "data1", tmp_path / "data2"
    try:
        with (
            instance(data1, policy, redis_server, "host-a-1-aaaaaa") as one,
            instance(data2, policy, redis_server, "host-b-2-bbbbbb") as two,
            ExecClient(one.url) as c1,
            ExecClient(two.url) as c2,
        ):
            for client in (c1, c2):
                wait_until(functools.partial(_sees_both, client), what="peers")
            yield one, two, c1, c2
    finally:
        kill_leftovers(data1, data2)


def event_ids(events: list[ServerSentEvent]) -> list[str]:
    return [e.id for e in events if e.id]


def test_a_run_on_one_instance_is_watched_and_driven_from_the_other(
    pair: tuple[LiveServer, LiveServer, ExecClient, ExecClient],
) -> None:
    _, _, c1, c2 = pair
    run = c1.start(argv=["python3", "-q"], pty=True, cols=100, rows=30, timeout_s=30)
    rid = run["id"]
    assert rid.startswith("host-a-1-aaaaaa.")
    assert run["instance"] == "host-a-1-aaaaaa"
    with c1.events(rid) as it1, c2.events(rid) as it2:
        seen1, seen2 = [next(it1)], [next(it2)]
        assert seen1[0].event == seen2[0].event == "run"
        info2 = json.loads(seen2[0].data)["run"]
        assert (info2["instance"], info2["here"], info2["status"]) == ("host-a-1-aaaaaa", False, "running")
        # The prompt is there before any input: on both instances.
        read_until(it1, b">>> ")
        read_until(it2, b">>> ")
        # Input POSTed to instance 2 reaches the REPL on instance 1; both viewers see the answer.
        sent = c2.send(rid, "print(6*7)\r")
        assert sent.status_code == 200, sent.text
        assert sent.json()["bytes"] == len("print(6*7)\r")
        read_until(it1, b"42\r\n>>> ")
        read_until(it2, b"42\r\n>>> ")
        assert c2.http.post(f"/exec/runs/{rid}/resize", json={"cols": 90, "rows": 20}).status_code == 200
        # A signal POSTed to instance 2 ends it.
        signalled = c2.signal(rid, "TERM")
        assert signalled.status_code == 200, signalled.text
        rest1, rest2 = list(it1), list(it2)
    assert rest1[-1].event == rest2[-1].event == "exit"
    assert json.loads(rest2[-1].data)["status"] == "signalled"
    # Byte-identical, and the same ids (the backend's), whichever instance served the stream.
    full1, full2 = c1.all_events(rid), c2.all_events(rid)
    assert output(full1) == output(full2)
    assert b"42\r\n" in output(full2)
    assert event_ids(full1) == event_ids(full2)
    assert [e.event for e in full2].count("resize") == 2
    assert any(e.event == "notice" and "SIGTERM" in e.data for e in full2)
    # Status and exit seen on both; the run list of instance 2 shows where it ran.
    for client in (c1, c2):
        got = client.wait_status(rid)
        assert (got["status"], got["signal"], got["instance"]) == ("signalled", "TERM", "host-a-1-aaaaaa")
    listed = {r["id"]: r for r in c2.http.get("/exec/runs").json()["runs"]}
    assert listed[rid]["here"] is False
    # After the end: refused with the owner's own 409, through instance 2.
    late = c2.send(rid, "print(1)\r")
    assert late.status_code == 409
    assert "not running" in late.json()["detail"]
    assert c2.http.post("/exec/runs/host-a-1-aaaaaa.000000000000/input", json={"data": "x"}).status_code == 404
    assert c2.http.get("/exec/runs/nobody.000000000000").status_code == 404


RAMP = "import time\nfor i in range(60):\n    print(f'line {i:03d}', flush=True)\n    time.sleep(0.02)\n"


def test_a_viewer_resumes_on_either_instance_without_loss_or_duplicates(
    pair: tuple[LiveServer, LiveServer, ExecClient, ExecClient],
) -> None:
    _, _, c1, c2 = pair
    run = c1.start(argv=["python3", "-c", RAMP], timeout_s=30)
    rid = run["id"]
    with c2.events(rid) as it:
        first = [next(it) for _ in range(6)]  # the run events and a few lines
    last = event_ids(first)[-1]
    time.sleep(0.3)  # more output arrives while nobody watches on instance 2
    rest = c2.all_events(rid, last_id=last)
    assert rest[0].event == "run"
    assert not any(e.event == "reset" for e in rest)
    got = first + rest[1:]
    ids = event_ids(got)
    assert len(ids) == len(set(ids))
    expected = b"".join(f"line {i:03d}\n".encode() for i in range(60))
    assert output(got) == expected
    # The same id resumes on instance 1 too: ids are the backend's, not one server's.
    again = c1.all_events(rid, last_id=last)
    assert output(first + again[1:]) == expected
    # From the exit's id: nothing more will come (204 stops EventSource).
    end = c2.http.get(f"/exec/runs/{rid}/events", headers={"Last-Event-ID": ids[-1]})
    assert end.status_code == 204
    # An id that is not one of this run's: a reset, then everything from the start.
    reset = c2.all_events(rid, last_id="o123")
    assert [e.event for e in reset[:2]] == ["run", "reset"]
    assert reset[1].id  # an id to resume from, never the bad one kept
    assert output(reset) == expected
    # The raw output, from instance 2, which has no log file of this run: from the topic.
    raw = c2.http.get(f"/exec/runs/{rid}/output")
    assert raw.status_code == 200
    assert raw.content == expected == c1.http.get(f"/exec/runs/{rid}/output").content


def test_a_viewer_token_minted_on_one_instance_works_on_the_other(
    pair: tuple[LiveServer, LiveServer, ExecClient, ExecClient],
) -> None:
    one, two, c1, _ = pair
    rid = c1.start(argv=["echo", "shared"])["id"]
    minted = c1.http.post("/exec/tokens", json={"run_id": rid, "label": "guest"})
    assert minted.status_code == 201, minted.text
    token = minted.json()["token"]
    with ExecClient(two.url, token=token) as guest:
        assert guest.http.get("/exec/me").json() == {"role": "viewer", "name": "viewer:guest", "run_id": rid}
        assert output(guest.all_events(rid)) == b"shared\n"
        assert guest.send(rid, "x").status_code == 403  # a viewer, wherever it asks
        assert guest.http.get("/exec/runs/other.000000000000").status_code == 403
    # The page's way: log in on instance 2 with it; the session lives where the token does.
    with httpx.Client(base_url=two.url, headers={"Origin": two.url}) as page:
        login = page.post("/exec/login", json={"token": token})
        assert login.status_code == 200, login.text
        assert page.get("/exec/me").json()["role"] == "viewer"
        revoked = c1.http.delete(f"/exec/tokens/{minted.json()['id']}")
        assert revoked.status_code == 200
        assert page.get("/exec/me").status_code == 401  # revoked on instance 1: refused on 2 at once
    with ExecClient(two.url, token=token) as guest:
        assert guest.http.get("/exec/me").status_code == 401
    # An operator logged in on instance 1, whose next request lands on instance 2 (a load balancer).
    with httpx.Client(base_url=one.url, headers={"Origin": one.url}) as browser:
        assert browser.post("/exec/login", json={"token": TOKEN, "name": "ada"}).status_code == 200
        me = browser.get(f"{two.url}/exec/me", headers={"Origin": two.url})
        assert me.json() == {"role": "operator", "name": "ada", "run_id": None}
        # Logging out on instance 2 ends the session made on instance 1.
        sid = browser.cookies.get("exec_session")
        assert sid
        assert browser.post(f"{two.url}/exec/logout", headers={"Origin": two.url}).status_code == 200
    with httpx.Client(cookies={"exec_session": sid}) as stale:
        assert stale.get(f"{one.url}/exec/me").status_code == 401
    with ExecClient(two.url, token="v_not-a-token-of-anyone") as nobody:
        assert nobody.http.get("/exec/me").status_code == 401


def test_when_the_owner_goes_away_the_other_instance_says_so(
    pair: tuple[LiveServer, LiveServer, ExecClient, ExecClient], tmp_path: Path
) -> None:
    one, _, c1, c2 = pair
    rid = c1.start(argv=["sleep", "60"], timeout_s=60)["id"]
    wait_until(lambda: c2.http.get(f"/exec/runs/{rid}").json()["status"] == "running", what="state on instance 2")
    # Instance 1 leaves the cluster without ending its run (as if its process hung or crashed).
    assert one.server is not None
    assert one.server.loop is not None
    cluster = one.app.state.exec_app.cluster
    asyncio.run_coroutine_threadsafe(cluster.router.close(), one.server.loop).result(10)
    wait_until(lambda: c2.http.get(f"/exec/runs/{rid}").json()["status"] == "unreachable", what="unreachable")
    gone = c2.send(rid, "x\n")
    assert gone.status_code == 503
    assert "host-a-1-aaaaaa" in gone.json()["detail"]
    assert "not reachable" in gone.json()["detail"]
    assert c2.signal(rid, "INT").status_code == 503
    with c2.events(rid) as it:
        prelude = [next(it), next(it)]
    assert json.loads(prelude[0].data)["run"]["status"] == "unreachable"
    assert prelude[1].event == "unreachable"
    assert "not reachable" in prelude[1].data
    # A graceful stop ends the run and publishes its end: instance 2 answers 409, not 503.
    pids = run_pids(tmp_path / "data1")
    began = time.monotonic()
    one.stop()
    assert time.monotonic() - began < 15
    assert pids
    assert not any(alive(pid) for pid in pids)
    info = c2.http.get(f"/exec/runs/{rid}").json()
    assert (info["status"], info["instance"]) == ("terminated", "host-a-1-aaaaaa")
    late = c2.send(rid, "x\n")
    assert late.status_code == 409
    assert "has finished (terminated)" in late.json()["detail"]
    events = c2.all_events(rid)
    assert json.loads(events[-1].data)["status"] == "terminated"
    listed = c2.http.get("/exec/runs").json()
    assert listed["instances"] == ["host-b-2-bbbbbb"]


def test_workers_share_runs_and_tokens(tmp_path: Path, redis_server: RedisServer) -> None:
    """``python -m remote_exec --backend redis://... --workers 2``: any worker serves any run."""
    port = free_port()
    work = tmp_path / "work"
    work.mkdir()
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[commands]\nallow = ["cat", "sleep"]\n[cwd]\nallow = ["{work}"]\ndefault = "{work}"\n'
        "[runs]\nkill_grace_s = 0.5\n"
    )
    env = {**os.environ, "REMOTE_EXEC_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "remote_exec", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    cmd += ["--backend", redis_server.url, "--workers", "2", "--policy", str(policy), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"

        def fresh() -> httpx.Client:  # a new connection each time: the kernel picks the worker
            return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)

        def instances() -> int:
            try:
                with fresh() as c:
                    r = c.get("/exec/runs")
                    return len(r.json().get("instances", [])) if r.status_code == 200 else 0
            except httpx.TransportError:
                return 0

        wait_until(lambda: instances() == 2, timeout=30, what="two workers that see each other")
        with fresh() as c:
            r = c.post("/exec/runs", json={"argv": ["cat"]})
            assert r.status_code == 201, r.text
            rid = r.json()["id"]
        # Input through both workers: the one that runs it, and the other, which routes it.
        here: list[bool] = []
        for i in range(60):
            with fresh() as c:
                sent = c.post(f"/exec/runs/{rid}/input", json={"data": f"line {i}\n"})
                assert sent.status_code == 200, sent.text
                here.append(c.get(f"/exec/runs/{rid}").json()["here"])
            if i >= 7 and True in here and False in here:
                break
        assert True in here
        assert False in here
        with fresh() as c:
            assert c.post(f"/exec/runs/{rid}/input", json={"eof": True}).status_code == 200
        with ExecClient(url) as ex:
            events = ex.all_events(rid)
        assert output(events) == b"".join(f"line {i}\n".encode() for i in range(len(here)))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        kill_leftovers(tmp_path / "data")


def test_a_restart_marks_lost_only_the_runs_whose_instance_died(tmp_path: Path, redis_server: RedisServer) -> None:
    """Workers share a data dir: a restarted one must not declare a live sibling's runs lost."""
    data = tmp_path / "data"
    host = socket.gethostname()[:32]
    dead = f"{host}-99999999-abcdef.0123456789ab"  # above any pid_max: that process is gone
    sibling = f"{host}-{os.getpid()}-abcdef.0123456789ab"  # a live process: not ours to judge
    store = Store(data / "exec.sqlite3")
    store.open()
    for rid in (dead, sibling):
        store.insert_run(
            RunRow(
                id=rid, argv=["sleep", "60"], command="sleep 60", shell=False, cwd=str(tmp_path), env_keys=[],
                pty=False, cols=80, rows=24, owner="operator", addr="127.0.0.1", status="running", exit_code=None,
                signal=None, started_at=time.time(), ended_at=None, duration_s=None, timeout_s=60.0,
                output_bytes=0, dropped_bytes=0, pid=None, pid_started=None,
            )
        )  # fmt: skip
    store.close()
    policy = make_policy(tmp_path)
    with instance(data, policy, redis_server, "host-c-3-cccccc") as srv, ExecClient(srv.url) as c:
        events = c.all_events(dead)  # from the backend: the restart published how it ended
        assert json.loads(events[-1].data)["status"] == "lost"
        assert c.http.get(f"/exec/runs/{dead}").json()["status"] == "lost"
        # Not marked lost; not in the cluster either: shown as unreachable, not "running".
        assert c.http.get(f"/exec/runs/{sibling}").json()["status"] == "unreachable"


def test_revoking_a_viewer_token_on_one_instance_ends_its_streams_on_the_other(
    pair: tuple[LiveServer, LiveServer, ExecClient, ExecClient],
) -> None:
    """Issue 14 part 5 across instances: the revocation is published; every instance ends its own."""
    one, two, c1, _ = pair
    rid = c1.start(
        argv=["python3", "-c", "import time\nwhile True:\n    print('x', flush=True)\n    time.sleep(0.1)\n"]
    )["id"]
    minted = c1.http.post("/exec/tokens", json={"label": "guest"}).json()
    watchers = [
        Watcher(two.url, f"/exec/runs/{rid}/events", token=minted["token"]),
        Watcher(two.url, "/exec/events", token=minted["token"]),
        Watcher(one.url, f"/exec/runs/{rid}/events", token=minted["token"]),
    ]
    try:
        for w in watchers:
            assert w.opened.wait(10)
            assert w.status == 200
        watchers[0].wait_for("stdout", 10)
        watchers[2].wait_for("stdout", 10)
        revoked_at = time.monotonic()
        assert c1.http.delete(f"/exec/tokens/{minted['id']}").status_code == 200
        for w in watchers:
            assert w.done.wait(7), f"{w.path} still open; {w.names()[-5:]}"
            assert w.ended is not None
            assert w.ended - revoked_at <= 2.0, f"{w.path} ended {w.ended - revoked_at:.2f} s after"
            assert w.events[-1][1].event == "revoked"
        with ExecClient(two.url, token=minted["token"]) as late:
            assert late.http.get(f"/exec/runs/{rid}").status_code == 401
    finally:
        c1.http.post(f"/exec/runs/{rid}/terminate")
        for w in watchers:
            w.close()


def test_an_owner_of_another_host_silent_past_lost_after_has_its_runs_declared_lost(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Issue 13 part 4, for an owner on another host (its pid cannot be checked): ``unreachable``
    when it is forgotten, ``lost`` once its liveness key expires (``lost_after``); if it was only
    cut off and comes back, it ends those runs itself, so "lost" stays true."""
    work = tmp_path / "work"
    work.mkdir()
    policy = make_policy(work)

    def node(name: str, data: Path) -> LiveServer:
        return LiveServer(
            lambda: create_app(
                data, token=TOKEN, policy=policy, backend=redis_server.url, instance=name, beat=0.3, lost_after=2.0
            )
        )

    data1, data2 = tmp_path / "d1", tmp_path / "d2"
    try:
        with (
            node("far-host-1-aaaaaa", data1) as one,
            node("near-host-2-bbbbbb", data2) as two,
            ExecClient(one.url) as c1,
            ExecClient(two.url) as c2,
        ):
            wait_until(lambda: len(c2.http.get("/exec/runs").json()["instances"]) == 2, what="peers")
            rid = c1.start(argv=["sleep", "60"], timeout_s=60)["id"]
            wait_until(lambda: c2.http.get(f"/exec/runs/{rid}").json()["status"] == "running", what="running on 2")
            watcher = Watcher(two.url, f"/exec/runs/{rid}/events", token=TOKEN)
            watcher.wait_for("run", 10)
            # Instance 1 goes silent (a hang, a network split): no beats, no liveness key refresh.
            assert one.server is not None
            assert one.server.loop is not None
            cluster = one.app.state.exec_app.cluster
            cut = time.monotonic()

            async def go_silent() -> None:
                assert cluster._task is not None
                cluster._task.cancel()
                await cluster.router.close()

            asyncio.run_coroutine_threadsafe(go_silent(), one.server.loop).result(10)
            at, _ = watcher.wait_for("unreachable", 5)
            lost_at, ended = watcher.wait_for("exit", 10)
            assert at <= lost_at
            assert json.loads(ended.data)["status"] == "lost"
            assert 1.5 <= lost_at - cut <= 6.0, f"lost {lost_at - cut:.1f} s after it went silent"
            assert watcher.done.wait(5)
            watcher.close()
            listed = {r["id"]: r for r in c2.http.get("/exec/runs").json()["runs"]}
            assert listed[rid]["status"] == "lost"
            # It comes back: it learns its runs were declared lost, and ends them.
            pids = run_pids(data1)
            assert pids
            assert all(alive(p) for p in pids)

            async def come_back() -> None:
                await cluster.router.start()
                cluster._task = asyncio.ensure_future(cluster._beats())

            asyncio.run_coroutine_threadsafe(come_back(), one.server.loop).result(10)
            wait_until(lambda: not any(alive(p) for p in run_pids(data1)), timeout=10, what="its run ended")
            assert c1.http.get(f"/exec/runs/{rid}").json()["status"] != "running"
    finally:
        kill_leftovers(data1, data2)


def test_with_redis_away_a_viewer_token_gets_503_not_500(
    pair: tuple[LiveServer, LiveServer, ExecClient, ExecClient], redis_server: RedisServer
) -> None:
    """Tokens and sessions are in Redis now: while it is away, asking about one is a clear 503."""
    _, two, c1, c2 = pair
    token = c1.http.post("/exec/tokens", json={"label": "guest"}).json()["token"]
    redis_server.kill()
    with ExecClient(two.url, token=token) as guest:
        r = guest.http.get("/exec/me")
        assert r.status_code == 503, r.text
        assert "unavailable" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
    assert c2.http.get("/exec/me").status_code == 200  # the operator token needs no lookup
    listed = c2.http.get("/exec/tokens")
    assert listed.status_code == 503, listed.text
