"""The ``sse`` command end to end: real subprocesses against a real server."""

from __future__ import annotations

import contextlib
import json
import queue
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from shared import Hub, MemoryBackend
from shared.cli import analyze
from shared.client import RpcError
from showcase import basics, bidi
from tests.rig import LiveServer, free_port, wait_until

SSE = [sys.executable, "-m", "shared"]
SCRIPT = Path(sys.executable).with_name("sse")  # the console script, from `pip install -e .`


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SSE, *args], capture_output=True, text=True, timeout=timeout)


class Lines:
    """A running command whose stdout lines are read by a thread (so reads can time out)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*SSE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []  # every line, also those taken from the queue
        self.stderr = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.seen.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next(self, timeout: float = 15) -> str | None:
        return self.lines.get(timeout=timeout)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, self.stderr = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, self.stderr = self.proc.communicate()
        return self.stderr


@contextmanager
def responding(url: str, *args: str) -> Iterator[Lines]:
    """``sse respond`` running until the block ends; waits until the server lists it."""
    client_id = args[args.index("--client-id") + 1]
    proc = Lines("respond", url + "/bidi/events", *args)
    try:
        wait_until(lambda: _connected(url, client_id), timeout=20, what=f"{client_id} connected")
        yield proc
    finally:
        proc.stop()


def _connected(url: str, client_id: str) -> bool:
    clients = httpx.get(url + "/bidi/clients").json()
    return any(c["client_id"] == client_id and c["connected"] for c in clients)


def test_analyze_counts_words_and_summarises() -> None:
    assert analyze({"message": "one two  three"}) == {"words": 3, "characters": 14, "summary": "one two three"}
    long = analyze({"message": " ".join(f"w{i}" for i in range(20))})
    assert long["summary"] == " ".join(f"w{i}" for i in range(12)) + " …"
    with pytest.raises(RpcError) as info:
        analyze({"text": "no message"})
    assert info.value.code == -32602


def test_respond_and_trigger_end_to_end() -> None:
    with LiveServer(lambda: bidi.create_app()) as srv, responding(srv.url, "--client-id", "cli-1") as responder:
        trigger = srv.url + "/bidi/trigger"
        ok = run("trigger", trigger, "--client-id", "cli-1", "--message", "the quick brown fox")
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout) == {"words": 4, "characters": 19, "summary": "the quick brown fox"}
        assert "answered by cli-1 in" in ok.stderr

        as_json = run("trigger", trigger, "--client-id", "cli-1", "--message", "hi", "--json")
        assert json.loads(as_json.stdout)["result"]["words"] == 1
        assert json.loads(as_json.stdout)["rtt_ms"] > 0

        unknown_method = run("trigger", trigger, "--client-id", "cli-1", "--method", "nope", "--message", "x")
        assert unknown_method.returncode == 5
        assert "the client answered with error -32601: method not found: nope (HTTP 502)" in unknown_method.stderr

        nobody = run("trigger", trigger, "--client-id", "nobody", "--message", "x")
        assert nobody.returncode == 3
        assert "no client with id 'nobody' is connected (HTTP 404)" in nobody.stderr
        responder.stop()
    log = "\n".join(responder.seen)
    assert "session: client id cli-1" in log
    assert log.count("answered ") == 3  # two results and one error; the unknown client never got here


def running(marker: str, but: int) -> list[psutil.Process]:
    """Processes with ``marker`` on their command line, except ``but`` (the one that started them)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid != but and any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc)
    return found


def test_respond_exec_runs_a_command_per_request_and_kills_it_when_cancelled() -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    # "; exit $?" keeps the shell alive, so Python is its child: a cancel must kill both.
    script = (
        shlex.join(
            [
                sys.executable,
                "-c",
                f"# {marker}\n"
                "import json, os, sys\n"
                "params = json.load(sys.stdin)\n"
                "method = os.environ['SSE_METHOD']\n"
                "if method == 'fail':\n"
                "    print('disk on fire', file=sys.stderr); sys.exit(3)\n"
                "if method == 'slow':\n"
                "    import time; time.sleep(30)\n"
                "if method == 'text':\n"
                "    print('plain words'); sys.exit(0)\n"
                "print(json.dumps({'method': method, 'upper': params['message'].upper()}))\n",
            ]
        )
        + "; exit $?"
    )
    with (
        LiveServer(lambda: bidi.create_app()) as srv,
        responding(srv.url, "--client-id", "ex", "--exec", script) as responder,
    ):
        trigger = srv.url + "/bidi/trigger"
        ok = run("trigger", trigger, "--client-id", "ex", "--method", "shout", "--message", "hey")
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout) == {"method": "shout", "upper": "HEY"}

        text = run("trigger", trigger, "--client-id", "ex", "--method", "text", "--message", "x")
        assert json.loads(text.stdout) == "plain words"

        failed = run("trigger", trigger, "--client-id", "ex", "--method", "fail", "--message", "x")
        assert failed.returncode == 5
        assert "command exited with status 3" in failed.stderr
        assert "disk on fire" in failed.stderr

        began = time.monotonic()
        slow = run("trigger", trigger, "--client-id", "ex", "--method", "slow", "--message", "x", "--timeout", "1")
        assert slow.returncode == 4
        assert "did not answer" in slow.stderr
        assert "(HTTP 504)" in slow.stderr
        assert time.monotonic() - began < 15
        # The server's `cancel` killed the command, its children included.
        wait_until(
            lambda: not running(marker, responder.proc.pid), timeout=10, what="the cancelled command to be killed"
        )

        # So does stopping `sse respond` (SIGTERM) while a command runs.
        pending = subprocess.Popen(
            [*SSE, "trigger", trigger, "--client-id", "ex", "--method", "slow", "--message", "x"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: len(running(marker, responder.proc.pid)) >= 2, timeout=15, what="the command to start")
            responder.stop()
            wait_until(lambda: not running(marker, responder.proc.pid), timeout=10, what="the command to be killed")
        finally:
            pending.kill()
            pending.wait()


def test_trigger_reports_an_unreachable_server_and_bad_arguments() -> None:
    down = run("trigger", f"http://127.0.0.1:{free_port()}/bidi/trigger", "--client-id", "x", "--message", "m")
    assert down.returncode == 1
    assert "cannot reach" in down.stderr
    bad = run("trigger", "http://127.0.0.1:1/bidi/trigger", "--client-id", "x", "--params", "{nope")
    assert bad.returncode == 2
    assert "--params is not valid JSON" in bad.stderr


def test_listen_prints_events_and_refuses_what_is_not_a_stream() -> None:
    with LiveServer(lambda: basics.create_app(interval=0.05)) as srv:
        plain = run("listen", srv.url + "/basics/events?count=3&interval=0", "-n", "4")
        assert plain.returncode == 0, plain.stderr
        lines = plain.stdout.splitlines()
        assert lines[0].startswith('[tick] id=1 {"n":1,"of":3,')
        assert lines[3] == '[done] id=3 {"sent": 3}'
        assert "connected to" in plain.stderr

        missing = run("listen", srv.url + "/basics/nope")
        assert missing.returncode == 1
        assert "HTTP 404" in missing.stderr
        page = run("listen", srv.url + "/basics/")
        assert page.returncode == 1
        assert "is not an event stream (Content-Type: text/html)" in page.stderr


def test_listen_resumes_across_a_server_restart_with_nothing_lost_or_doubled() -> None:
    backend = MemoryBackend()  # one backend across the restart, standing in for a durable store
    srv = LiveServer(lambda: basics.create_app(Hub(backend), interval=0.05)).start()
    listener = Lines("listen", "--json", srv.url + "/basics/events", "-n", "30")
    events: list[Any] = []
    try:
        while len(events) < 30:
            line = listener.next()
            assert line is not None, f"listen ended early: {listener.stop()}"
            events.append(json.loads(line))
            if len(events) == 10:
                srv.restart()
        assert listener.next() is None  # `-n 30`: it exits by itself
        assert listener.proc.wait(10) == 0
    finally:
        stderr = listener.stop()
        srv.stop()
    assert "the server is shutting down; reconnecting in" in stderr
    seqs = [int(e["id"].rsplit("-", 1)[1]) for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + 30))  # one unbroken run across the restart
    assert {e["event"] for e in events} == {"tick"}


def test_the_console_script_and_python_m_are_the_same_command() -> None:
    assert SCRIPT.exists(), f"{SCRIPT} is missing: run `pip install -e .` (pyproject declares the script)"
    help_text = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30).stdout
    assert help_text == run("--help").stdout
    for command in ("listen", "respond", "trigger"):
        assert command in help_text
