"""Runs outlive the server process: finished ones stay browsable, running ones never stay "running"."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from httpx_sse import ServerSentEvent

from remote_exec.runlog import RunLog
from remote_exec.store import RunRow, Store

from .helpers import ExecClient, alive, exec_server, make_policy, output


@pytest.fixture
def root(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def test_finished_runs_and_their_output_survive_a_restart(root: Path) -> None:
    srv = exec_server(root.parent / "data", make_policy(root)).start()
    try:
        with ExecClient(srv.url) as ex:
            done = ex.start(argv=["python3", "-c", "import sys; sys.stdout.buffer.write(bytes(range(256)) * 3)"])
            before = ex.all_events(done["id"])
            sleeper = ex.start(argv=["sleep", "30"])
            # A client watching the running one when the server goes down.
            seen: list[ServerSentEvent] = []

            def watch() -> None:
                with ExecClient(srv.url) as watcher, watcher.events(sleeper["id"]) as it:
                    seen.extend(it)

            thread = threading.Thread(target=watch)
            thread.start()
            deadline = time.monotonic() + 10
            while not any(e.event == "viewers" for e in seen) and time.monotonic() < deadline:
                time.sleep(0.02)
        srv.restart()  # graceful: open streams get "shutdown", running runs are ended
        thread.join(10)
        assert seen[-1].event == "shutdown"
        assert json.loads(seen[-1].data)["reason"] == "server shutting down"
        with ExecClient(srv.url) as ex:
            listed = {r["id"]: r for r in ex.http.get("/exec/runs").json()["runs"]}
            assert listed[done["id"]]["status"] == "exited"
            assert listed[sleeper["id"]]["status"] == "terminated"
            after = ex.all_events(done["id"])
            assert output(after) == output(before) == bytes(range(256)) * 3
            assert [e.id for e in after if e.id] == [e.id for e in before if e.id]
            # The watcher resumes from the id the shutdown event carried, and sees how it ended.
            rest = ex.all_events(sleeper["id"], last_id=seen[-1].id)
            assert [e.event for e in rest if e.event != "notice"] == ["run", "exit"]
            assert json.loads(rest[-1].data)["status"] == "terminated"
    finally:
        srv.stop()


def test_runs_left_running_by_a_dead_server_are_marked_lost(root: Path) -> None:
    data = root.parent / "data"
    # What a server killed with -9 leaves behind: a "running" row, a log whose last frame is
    # torn, and the run's process, still alive in its own session.
    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        store = Store(data / "exec.sqlite3")
        store.open()
        store.insert_run(
            RunRow(
                id="deadbeef0001", argv=["sleep", "60"], command="sleep 60", shell=False, cwd=str(root),
                env_keys=[], pty=False, cols=80, rows=24, owner="operator", addr="127.0.0.1",
                status="running", exit_code=None, signal=None, started_at=time.time() - 5, ended_at=None,
                duration_s=None, timeout_s=60, output_bytes=0, dropped_bytes=0, pid=None, pid_started=None,
            )
        )  # fmt: skip
        store.set_pid("deadbeef0001", orphan.pid, None)
        store.close()
        (data / "exec-runs").mkdir()
        log_path = data / "exec-runs" / "deadbeef0001.log"
        with RunLog(log_path, writable=True) as log:
            log.append(b"o", b"partial output\n")
        with log_path.open("ab") as f:
            f.write(b"o\x00\x00\x00\x10only half")  # the crash came mid-write

        with exec_server(data, make_policy(root)) as srv, ExecClient(srv.url) as ex:
            run = ex.http.get("/exec/runs/deadbeef0001").json()
            assert run["status"] == "lost"
            events = ex.all_events("deadbeef0001")
            assert output(events) == b"partial output\n"
            assert json.loads(events[-1].data)["status"] == "lost"
            assert orphan.wait(timeout=5) == -9  # the leftover process was ended
            audit = ex.http.get("/exec/audit", params={"run_id": "deadbeef0001"}).json()["entries"]
            assert audit[0]["action"] == "lost"
            assert audit[0]["detail"]["leftover_processes_killed"] == 1
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    assert not alive(orphan.pid)
