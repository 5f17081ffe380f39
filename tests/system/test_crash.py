"""``kill -9`` of a real server process, then a restart on the same data dir.

No graceful shutdown, no ``shutdown`` event, no final write: what a crash, an OOM kill or a power
cut of the process leaves. Each app runs as ``python -m <app> --port N --data-dir D`` in a child
process, is SIGKILLed while clients are writing and reading, and is started again on the same port.

- Chat: every send answered 201 is in the room's history exactly once, and readers that resume
  with Last-Event-ID receive exactly the acknowledged messages, once each, in order. Senders whose
  request was cut off retry with the same ``client_msg_id`` (what the page does), so a message
  stored just before the kill but never acknowledged is not stored twice.
- Remote exec: a run that was running is marked ``lost`` at the restart (not left "running"), its
  output so far is readable, a watcher resumes by Last-Event-ID without a lost or doubled byte,
  and the run's processes, which outlived the server in their own session, are ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from httpx_sse import SSEError, connect_sse

from shared.serve_cli import BACKEND_ENV
from tests.rig import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


class AppProcess:
    """``python -m <module> --port P --data-dir D ...`` as a child process; same port on restart."""

    def __init__(self, module: str, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", module, "--port", str(self.port), "--data-dir", str(data_dir), *args]
        self.cmd += ["--log-level", "warning"]
        # The single-process stores (SQLite, files) are what is tested: no $SSE_BACKEND from outside.
        self.env = {k: v for k, v in os.environ.items() if k != BACKEND_ENV} | (env or {})
        self.log = data_dir.parent / f"{module}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, ready_path: str) -> AppProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd} exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + ready_path, timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.cmd} did not answer {ready_path} within 30 s: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        """SIGKILL: no shutdown hook, no flush, connections reset."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def app_process(module: str, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[AppProcess]:
    app = AppProcess(module, data_dir, *args, env=env)
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture(autouse=True)
def _no_orphans_of_ours() -> Iterator[None]:
    """No process the test started (a server, anything still under it) outlives the test. A killed
    server's runs are re-parented away from us: the exec test checks them by process group."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    deadline = time.monotonic() + 10
    left: list[psutil.Process] = []
    while time.monotonic() < deadline:
        left = []
        for p in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
        if not left:
            return
        time.sleep(0.1)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    pytest.fail(f"processes left behind: {[(p.pid, p.name()) for p in left]}")


# -- chat ---------------------------------------------------------------------------------------

ROOM = "general"
SENDERS = 4
READERS = 2
PACE_S = 0.12  # per sender: about 8 sends a second, under the default 10/s per person
DEADLINE_S = 60.0  # for the whole conversation; every loop below gives up by then


@dataclass
class Ack:
    message_id: int
    text: str
    at: float
    attempts: int
    replayed: bool


@dataclass
class ChatUser:
    name: str
    http: httpx.Client
    acked: dict[str, Ack] = field(default_factory=dict)  # client_msg_id -> what the 201 said
    failures: list[str] = field(default_factory=list)
    cut_off: int = 0  # requests that died with the server (no answer at all)

    @classmethod
    def join(cls, base_url: str, name: str) -> ChatUser:
        http = httpx.Client(base_url=base_url, timeout=httpx.Timeout(10.0, read=3.0))
        r = http.post("/chat/session", json={"name": name})
        assert r.status_code == 200, r.text
        return cls(name, http)  # the session cookie stays in the client's jar


def send_until_stopped(user: ChatUser, stop: threading.Event, deadline: float) -> None:
    """Send numbered messages until ``stop``; each one is retried with its own id until a 201."""
    n = 0
    while not stop.is_set() and time.monotonic() < deadline:
        cmid, text = f"{user.name}-{n}", f"{user.name} says {n}"
        n += 1
        attempts = 0
        while time.monotonic() < deadline:
            attempts += 1
            try:
                r = user.http.post(f"/chat/rooms/{ROOM}/messages", json={"text": text, "client_msg_id": cmid})
            except httpx.TransportError:
                user.cut_off += 1  # the server died under it, or is not back yet: same id again
                time.sleep(0.1)
                continue
            if r.status_code == 201:
                body = r.json()
                replayed = r.headers.get("Idempotent-Replayed") == "true"
                user.acked[cmid] = Ack(body["id"], body["text"], time.monotonic(), attempts, replayed)
                break
            if r.status_code in (429, 503):
                time.sleep(min(float(r.headers.get("Retry-After", "1")), 2.0))
                continue
            user.failures.append(f"{cmid}: {r.status_code} {r.text[:200]}")
            return
        else:
            user.failures.append(f"{cmid}: never acknowledged before the deadline")
            return
        time.sleep(PACE_S)


@dataclass
class Reader:
    user: ChatUser
    last_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # SSE ids of the message events, in arrival order
    other: Counter[str] = field(default_factory=Counter)
    connects: int = 0
    resumed_ids: list[str] = field(default_factory=list)  # Last-Event-ID sent on each reconnect

    def run(self, stop: threading.Event, deadline: float) -> None:
        """Read the room, reconnecting with Last-Event-ID after any break, until ``stop``."""
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                headers = {"Last-Event-ID": self.last_id}
                with connect_sse(self.user.http, "GET", f"/chat/rooms/{ROOM}/events", headers=headers) as source:
                    if source.response.status_code != 200:
                        time.sleep(0.2)
                        continue
                    self.connects += 1
                    if self.connects > 1:
                        self.resumed_ids.append(self.last_id)
                    for ev in source.iter_sse():
                        if ev.event == "message" and not ev.data:
                            continue  # a heartbeat comment (httpx-sse yields it as an empty event)
                        if ev.event == "message":
                            self.messages.append(json.loads(ev.data))
                            self.ids.append(ev.id)
                        else:
                            self.other[ev.event] += 1
                        if ev.id:
                            self.last_id = ev.id  # ephemeral events repeat the last id (WHATWG: it persists)
                        if stop.is_set():
                            return
            except (httpx.TransportError, SSEError):
                time.sleep(0.1)  # killed, restarting, or a quiet read timing out: resume


def all_history(user: ChatUser) -> list[dict[str, Any]]:
    """Every message of the room, oldest first, paging back with ``before``."""
    pages: list[list[dict[str, Any]]] = []
    before: int | None = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": 200} | ({"before": before} if before is not None else {})
        r = user.http.get(f"/chat/rooms/{ROOM}/messages", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page["messages"])
        if not page["has_more"]:
            break
        before = page["messages"][0]["id"]
    return [m for page in reversed(pages) for m in page]


def test_chat_kill_9_mid_conversation_loses_and_doubles_nothing(tmp_path: Path) -> None:
    data = tmp_path / "chat-data"
    with app_process("chat", data) as server:
        server.start("/chat/")
        deadline = time.monotonic() + DEADLINE_S
        senders = [ChatUser.join(server.url, f"sender{i}") for i in range(SENDERS)]
        watchers = [ChatUser.join(server.url, f"reader{i}") for i in range(READERS)]
        start_id = watchers[0].http.get(f"/chat/rooms/{ROOM}/messages").json()["latest_event_id"]
        readers = [Reader(w, start_id) for w in watchers]
        stop_sending, stop_reading = threading.Event(), threading.Event()
        threads = [
            threading.Thread(target=send_until_stopped, args=(u, stop_sending, deadline), daemon=True) for u in senders
        ] + [threading.Thread(target=r.run, args=(stop_reading, deadline), daemon=True) for r in readers]
        try:
            for t in threads:
                t.start()
            wait_until(lambda: all(r.connects for r in readers), timeout=20, what="readers connected")

            def acked() -> int:
                return sum(len(u.acked) for u in senders)

            # Kill while all four are sending: after 40 acknowledged sends (fewer on a slow machine).
            began = time.monotonic()
            while acked() < 40 and not (time.monotonic() - began > 6 and acked() >= 5):
                assert time.monotonic() - began < 30, "the chat acknowledged almost nothing in 30 s"
                time.sleep(0.02)
            server.kill9()
            killed_at = time.monotonic()
            acked_before = acked()
            time.sleep(0.5)  # senders and readers hit a dead port meanwhile
            server.start("/chat/")
            restarted_at = time.monotonic()
            wait_until(lambda: acked() >= acked_before + 10, timeout=20, what="sends after the restart")
            stop_sending.set()
            for t in threads[:SENDERS]:
                t.join(30)
            assert not any(u.failures for u in senders), [u.failures for u in senders]
            acks = {cmid: ack for u in senders for cmid, ack in u.acked.items()}
            expected = sorted(a.message_id for a in acks.values())
            wait_until(
                lambda: all(len(r.messages) >= len(expected) for r in readers),
                timeout=30,
                what="readers to receive every acknowledged message",
            )
            time.sleep(0.3)  # anything extra (a duplicate) would have arrived by now
        finally:
            stop_sending.set()
            stop_reading.set()
            for t in threads:
                t.join(10)
            for u in senders + watchers:
                u.http.close()

        # The history has every acknowledged message exactly once, and nothing else.
        checker = ChatUser.join(server.url, "checker")
        try:
            history = all_history(checker)
        finally:
            checker.http.close()
        by_cmid = Counter(m["client_msg_id"] for m in history)
        assert all(count == 1 for count in by_cmid.values()), [k for k, v in by_cmid.items() if v > 1]
        assert set(by_cmid) == set(acks)
        for m in history:
            ack = acks[m["client_msg_id"]]
            assert (m["id"], m["text"]) == (ack.message_id, ack.text)

        # Each reader got exactly the acknowledged messages, once each, in order, across the kill.
        for r in readers:
            got = [m["id"] for m in r.messages]
            assert got == expected, f"missing {set(expected) - set(got)}, doubled {Counter(got) - Counter(set(got))}"
            assert len(set(r.ids)) == len(r.ids)
            assert [m["text"] for m in r.messages] == [acks[m["client_msg_id"]].text for m in r.messages]
            assert r.resumed_ids, "the reader never had to resume"
            assert r.other["reset"] == 0  # resumed from its id, never asked to reload

        in_flight = [a for a in acks.values() if a.attempts > 1 and a.at > killed_at]
        print(
            f"\nchat crash: {len(acks)} sends acknowledged ({acked_before} before the kill, "
            f"{len(acks) - acked_before} after; {sum(a.replayed for a in acks.values())} retries answered "
            f"'already stored'; {len(in_flight)} sends retried across the kill; "
            f"{sum(u.cut_off for u in senders)} requests cut off); restart took "
            f"{restarted_at - killed_at - 0.5:.2f} s; readers connected {[r.connects for r in readers]} times, "
            f"each received {len(expected)} messages once"
        )


# -- remote exec ---------------------------------------------------------------------------------

TOKEN = "crash-test-operator-token-0123456789"
# Prints 50 lines and "ready", then waits with a background child in its process group. It writes
# nothing after "ready": a write to the dead server's pipe would end it by SIGPIPE, and the test is
# about the restart finding and ending it.
SCRIPT = 'sleep 300 & i=0; while [ $i -lt 50 ]; do echo "line $i"; i=$((i+1)); done; echo ready; sleep 300'


def _policy(work: Path) -> str:
    return f"""
[commands]
allow = ["sh", "echo", "sleep"]
[cwd]
allow = ["{work}"]
default = "{work}"
[runs]
max_concurrent = 4
default_timeout_s = 120
max_timeout_s = 300
kill_grace_s = 1
"""


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    out = []
    for p in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.pid) == pgid:
                out.append(p.pid)
    return out


@dataclass
class RunWatcher:
    """Follows one run's stream, resuming with Last-Event-ID after any break, until ``exit``."""

    http: httpx.Client
    run_id: str
    last_id: str | None = None
    stdout: bytes = b""
    ids: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    connects: int = 0
    sent_ids: list[str | None] = field(default_factory=list)  # Last-Event-ID of each connect
    exit: dict[str, Any] | None = None

    def run(self, deadline: float) -> None:
        while self.exit is None and time.monotonic() < deadline:
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                with connect_sse(self.http, "GET", f"/exec/runs/{self.run_id}/events", headers=headers) as source:
                    if source.response.status_code != 200:
                        time.sleep(0.2)
                        continue
                    self.connects += 1
                    self.sent_ids.append(self.last_id)
                    for ev in source.iter_sse():
                        if ev.event == "message" and not ev.data:
                            continue  # a heartbeat comment
                        self.events.append(ev.event)
                        if ev.event == "stdout":
                            self.stdout += json.loads(ev.data)["text"].encode()
                        if ev.id and ev.id != self.last_id:
                            self.ids.append(ev.id)
                            self.last_id = ev.id
                        if ev.event == "exit":
                            self.exit = json.loads(ev.data)
                            return
            except (httpx.TransportError, SSEError):
                time.sleep(0.1)


def test_exec_kill_9_marks_the_running_run_lost_and_leaves_no_process(tmp_path: Path) -> None:
    work, data = tmp_path / "work", tmp_path / "exec-data"
    work.mkdir()
    policy = tmp_path / "policy.toml"
    policy.write_text(_policy(work))
    pgid: int | None = None
    with app_process("remote_exec", data, "--policy", str(policy), env={"REMOTE_EXEC_TOKEN": TOKEN}) as server:
        server.start("/exec/")
        http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=httpx.Timeout(10.0, read=5.0)
        )
        watcher_http = httpx.Client(base_url=server.url, headers=http.headers, timeout=httpx.Timeout(10.0, read=5.0))
        try:
            done = http.post("/exec/runs", json={"argv": ["echo", "finished before the crash"]}).json()
            wait_until(lambda: http.get(f"/exec/runs/{done['id']}").json()["status"] == "exited", what="echo ends")
            r = http.post("/exec/runs", json={"argv": ["sh", "-c", SCRIPT]})
            assert r.status_code == 201, r.text
            run_id = r.json()["id"]
            (start,) = [e for e in http.get("/exec/audit", params={"run_id": run_id}).json()["entries"]]
            pgid = int(start["detail"]["pid"])  # the run leads its own session and process group

            watcher = RunWatcher(watcher_http, run_id)
            thread = threading.Thread(target=watcher.run, args=(time.monotonic() + 60,), daemon=True)
            thread.start()
            wait_until(lambda: b"ready\n" in watcher.stdout, timeout=20, what="the run's output")
            before_kill = watcher.stdout
            assert len(group_members(pgid)) >= 2  # sh and its background sleep (and the foreground one)

            server.kill9()
            # The crash left the run's processes behind: their own session outlived the server.
            survivors = group_members(pgid)
            assert survivors, "the run's processes died with the server: nothing to show"
            server.start("/exec/")

            thread.join(30)
            assert watcher.exit is not None, f"the watcher never saw the end: {watcher.events[-5:]}"
            # Everything the run printed, once, in order, across the kill; then how it ended.
            assert watcher.stdout == before_kill == b"".join(b"line %d\n" % i for i in range(50)) + b"ready\n"
            assert len(set(watcher.ids)) == len(watcher.ids)
            assert watcher.connects >= 2
            assert watcher.sent_ids[-1] is not None  # resumed with its id
            assert watcher.exit["status"] == "lost"
            assert "server stopped" in watcher.exit["reason"]

            run = http.get(f"/exec/runs/{run_id}").json()
            assert run["status"] == "lost"
            assert run["ended_at"] is not None
            raw = http.get(f"/exec/runs/{run_id}/output", params={"stream": "stdout"})
            assert raw.content == before_kill
            # A new viewer replays the whole run from its log, and it ends.
            with connect_sse(http, "GET", f"/exec/runs/{run_id}/events") as source:
                replay = [ev.event for ev in source.iter_sse() if ev.data]
            assert replay[0] == "run"
            assert replay[-1] == "exit"
            assert replay.count("stdout") >= 1
            # Resuming from the end of a finished run is 204: EventSource stops asking.
            end = http.get(f"/exec/runs/{run_id}/events", headers={"Last-Event-ID": watcher.last_id or ""})
            assert end.status_code == 204

            # The restart ended what the dead server left running.
            wait_until(lambda: not group_members(pgid), timeout=15, what="the run's processes to be ended")
            lost = [e for e in http.get("/exec/audit", params={"run_id": run_id}).json()["entries"]]
            assert lost[0]["action"] == "lost"
            assert lost[0]["detail"]["leftover_processes_killed"] >= 2
            # A run that had finished before the crash is untouched.
            finished = http.get(f"/exec/runs/{done['id']}").json()
            assert finished["status"] == "exited"
            assert http.get(f"/exec/runs/{done['id']}/output").content == b"finished before the crash\n"
            # And the restarted server runs new commands.
            again = http.post("/exec/runs", json={"argv": ["echo", "after"]})
            assert again.status_code == 201
            print(
                f"\nexec crash: {len(before_kill)} bytes before the kill, {len(survivors)} processes of the run "
                f"outlived the server, {lost[0]['detail']['leftover_processes_killed']} ended at the restart; "
                f"the watcher connected {watcher.connects} times and resumed from {watcher.sent_ids[-1]}"
            )
        finally:
            http.close()
            watcher_http.close()
            if pgid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)  # never leave the test's processes behind
