"""Runs against a real uvicorn: interactive programs, streams, limits, signals, trees, refusals."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from remote_exec import Policy
from tests.rig import LiveServer

from .helpers import TOKEN, ExecClient, alive, exec_server, make_policy, output, read_until


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("exec")
    (base / "work" / "sub").mkdir(parents=True)
    (base / "outside").mkdir()
    (base / "work" / "escape").symlink_to(base / "outside")
    return base / "work"


@pytest.fixture(scope="module")
def policy(root: Path) -> Policy:
    return make_policy(root)


@pytest.fixture(scope="module")
def server(root: Path, policy: Policy) -> Iterator[LiveServer]:
    with exec_server(root.parent / "data", policy) as srv:
        yield srv


@pytest.fixture
def ex(server: LiveServer) -> Iterator[ExecClient]:
    with ExecClient(server.url) as client:
        yield client


def py(code: str) -> list[str]:
    return ["python3", "-c", code]


# -- interactive ----------------------------------------------------------------------------------


def test_pty_python_repl(ex: ExecClient) -> None:
    run = ex.start(argv=["python3", "-q"], pty=True, cols=100, rows=30, timeout_s=20)
    with ex.events(run["id"]) as it:
        first = next(it)
        assert first.event == "run"
        assert json.loads(first.data)["run"]["pty"] is True
        read_until(it, b">>> ")
        assert (
            ex.send(run["id"], "import sys; print(6*7, sys.stdin.isatty(), sys.stdout.isatty())\r").status_code == 200
        )
        got = read_until(it, b"42 True True\r\n>>> ")  # a real terminal: CRLF, echo, isatty()
        assert b"print(6*7" in got
        assert ex.send(run["id"], eof=True).status_code == 200  # Ctrl-D at the prompt ends the REPL
        rest = list(it)
    assert rest[-1].event == "exit"
    assert json.loads(rest[-1].data)["code"] == 0


PROMPT_THEN_ECHO = [
    "sh",
    "-c",
    'printf "name? "; read name; echo "hello $name" >&2',
]


def test_pipe_prompt_arrives_before_input_and_echo_on_stderr(ex: ExecClient) -> None:
    run = ex.start(argv=PROMPT_THEN_ECHO)
    with ex.events(run["id"]) as it:
        assert next(it).event == "run"
        got = read_until(it, b"name? ")
        assert got == b"name? "  # no newline, no input yet: it is there anyway
        assert ex.send(run["id"], "Ada\n").status_code == 200
        rest = list(it)
    names = [e.event for e in rest if e.event != "viewers"]
    assert names == ["input", "stderr", "exit"]
    assert output(rest, "stderr") == b"hello Ada\n"
    assert output(rest, "stdout") == b""
    assert output(rest, "input") == b"Ada\n"
    assert json.loads(rest[-1].data)["status"] == "exited"


def test_input_is_idempotent_by_id_and_refused_after_the_end(ex: ExecClient) -> None:
    run = ex.start(argv=["cat"])
    rid = run["id"]
    first = ex.send(rid, "once\n", input_id="in-1")
    again = ex.send(rid, "once\n", input_id="in-1")
    assert first.status_code == again.status_code == 200
    assert again.json()["duplicate"] is True
    assert ex.send(rid, eof=True).status_code == 200
    assert ex.send(rid, "late\n").status_code == 409  # EOF sent: input closed
    events = ex.all_events(rid)
    assert output(events) == b"once\n"
    assert ex.wait_status(rid)["exit_code"] == 0
    late = ex.send(rid, "after the end\n")
    assert late.status_code == 409
    assert "not running" in late.json()["detail"]
    assert ex.signal(rid, "INT").status_code == 409


# -- streams: late joiners, resume, bytes ------------------------------------------------------------

CHATTY = py(
    "import sys, time\n"
    "for i in range(300):\n"
    "    sys.stdout.write(f'line {i} ' + 'x' * (i % 50) + '\\n'); sys.stdout.flush()\n"
    "    if i % 25 == 0: sys.stderr.write(f'err {i}\\n'); sys.stderr.flush()\n"
    "    time.sleep(0.002)\n"
)


def test_live_late_joiner_and_resume_get_identical_bytes(ex: ExecClient) -> None:
    run = ex.start(argv=CHATTY)
    rid = run["id"]
    live = ex.all_events(rid)  # connected while it runs
    late = ex.all_events(rid)  # after it ended: the whole log
    # Resume: read part, drop the connection, come back with the last id.
    with ex.events(rid) as it:
        part = []
        for e in it:
            part.append(e)
            if e.event == "stdout" and len(part) > 3:
                break
    resumed = part + ex.all_events(rid, last_id=part[-1].id)

    expected = b"".join(f"line {i} {'x' * (i % 50)}\n".encode() for i in range(300))
    for events in (live, late, resumed):
        assert output(events, "stdout") == expected
        assert output(events, "stderr") == b"".join(f"err {i}\n".encode() for i in range(0, 300, 25))
    raw = ex.http.get(f"/exec/runs/{rid}/output", params={"stream": "stdout"})
    assert raw.content == expected
    ids = [int(e.id[1:]) for e in late if e.id]
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"o\d+", e.id) for e in late if e.id)


def test_resume_from_the_end_of_a_finished_run_is_204(ex: ExecClient) -> None:
    run = ex.start(argv=["echo", "done"])
    events = ex.all_events(run["id"])
    r = ex.http.get(f"/exec/runs/{run['id']}/events", headers={"Last-Event-ID": events[-1].id})
    assert r.status_code == 204  # tells EventSource to stop reconnecting


def test_unknown_last_event_id_gives_reset_then_everything(ex: ExecClient) -> None:
    run = ex.start(argv=["echo", "from the top"])
    events = ex.all_events(run["id"], last_id="o3")  # not a frame boundary
    assert [e.event for e in events][:2] == ["run", "reset"]
    assert events[1].id == "o0"  # the next resume is one the server can make: from the start
    assert output(events) == b"from the top\n"


def test_output_is_capped_with_a_marker(ex: ExecClient, policy: Policy) -> None:
    run = ex.start(argv=py("import sys; sys.stdout.buffer.write(b'y' * 5_000_000)"))
    events = ex.all_events(run["id"])
    assert output(events) == b"y" * policy.max_output_bytes
    (marker,) = [e for e in events if e.event == "truncated"]
    assert json.loads(marker.data)["limit"] == policy.max_output_bytes
    assert "truncated" in json.loads(marker.data)["message"]
    end = json.loads(events[-1].data)
    assert end["dropped_bytes"] == 5_000_000 - policy.max_output_bytes
    assert end["code"] == 0  # the rest was read and dropped: the program was never blocked


def test_non_utf8_bytes_round_trip(ex: ExecClient) -> None:
    blob = bytes(range(256)) * 4 + "ünïcode".encode() + b"\xff\xfe\x80"
    code = f"import sys; sys.stdout.buffer.write({blob!r}); sys.stderr.buffer.write({blob[::-1]!r})"
    run = ex.start(argv=py(code))
    events = ex.all_events(run["id"])
    assert output(events, "stdout") == blob
    assert output(events, "stderr") == blob[::-1]
    assert any("b64" in json.loads(e.data) for e in events if e.event == "stdout")
    pty_run = ex.start(argv=py("import sys; sys.stdout.buffer.write(b'\\xff\\x00ok')"), pty=True)
    assert b"\xff\x00ok" in output(ex.all_events(pty_run["id"]))


# -- ending runs ----------------------------------------------------------------------------------------


def test_timeout_kills_the_whole_tree(ex: ExecClient) -> None:
    run = ex.start(argv=["sh", "-c", 'sleep 100 & echo "bg $!"; echo "me $$"; sleep 100'], timeout_s=1)
    events = ex.all_events(run["id"])
    text = output(events).decode()
    pids = [int(x) for x in re.findall(r"(?:bg|me) (\d+)", text)]
    assert len(pids) == 2
    end = json.loads(events[-1].data)
    assert end["status"] == "timeout"
    assert end["signal"] == "TERM"
    assert any(e.event == "notice" and "timed out" in e.data for e in events)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids), "a process of the run survived its timeout"


def test_leftover_background_children_are_ended_with_the_run(ex: ExecClient) -> None:
    run = ex.start(argv=["sh", "-c", 'sleep 100 > /dev/null 2>&1 & echo "bg $!"'])
    events = ex.all_events(run["id"])
    (pid,) = [int(x) for x in re.findall(r"bg (\d+)", output(events).decode())]
    assert json.loads(events[-1].data)["code"] == 0
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


SIGNAL_AWARE = py(
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGHUP, lambda *a: os.write(1, b'got HUP\\n'))\n"
    "print('pid', os.getpid(), flush=True)\n"
    "time.sleep(30)\n"
)


def test_signals_reach_the_program(ex: ExecClient) -> None:
    run = ex.start(argv=SIGNAL_AWARE, timeout_s=20)
    rid = run["id"]
    with ex.events(rid) as it:
        got = read_until(it, b"\n")
        pid = int(got.split()[1])
        assert ex.signal(rid, "HUP").status_code == 200
        read_until(it, b"got HUP")
        assert ex.signal(rid, "STOP").status_code == 200
        deadline = time.monotonic() + 5
        while psutil.Process(pid).status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
            time.sleep(0.02)
        assert psutil.Process(pid).status() == psutil.STATUS_STOPPED
        assert ex.signal(rid, "CONT").status_code == 200
        assert ex.signal(rid, "SIGKILL").status_code == 200
        rest = list(it)
    end = json.loads(rest[-1].data)
    assert (end["status"], end["signal"], end["code"]) == ("signalled", "KILL", None)
    notices = [json.loads(e.data) for e in rest if e.event == "notice"]
    assert [n["signal"] for n in notices] == ["STOP", "CONT", "KILL"]
    assert ex.signal(rid, "BOOM").status_code == 400


def test_terminate_escalates_to_kill(ex: ExecClient) -> None:
    stubborn = py(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    run = ex.start(argv=stubborn)
    with ex.events(run["id"]) as it:
        read_until(it, b"ready")
        r = ex.http.post(f"/exec/runs/{run['id']}/terminate")
        assert r.status_code == 202
        rest = list(it)
    end = json.loads(rest[-1].data)
    assert (end["status"], end["signal"]) == ("terminated", "KILL")


def test_resource_limits_apply(ex: ExecClient) -> None:
    code = "import resource as r; print(r.getrlimit(r.RLIMIT_CPU), r.getrlimit(r.RLIMIT_NOFILE))"
    run = ex.start(argv=py(code))
    assert output(ex.all_events(run["id"])) == b"(60, 60) (200, 200)\n"


# -- refusals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cwd", ["/etc", "../outside", "sub/../../outside", "escape"])
def test_cwd_escape_is_403(ex: ExecClient, cwd: str) -> None:
    r = ex.http.post("/exec/runs", json={"argv": ["echo", "x"], "cwd": cwd})
    assert r.status_code == 403
    assert "outside the allowed directories" in r.json()["detail"]


def test_cwd_inside_is_used(ex: ExecClient, root: Path) -> None:
    run = ex.start(argv=["sh", "-c", "pwd"], cwd="sub")
    assert output(ex.all_events(run["id"])) == f"{(root / 'sub').resolve()}\n".encode()


def test_refusals_are_clear(ex: ExecClient) -> None:
    r = ex.http.post("/exec/runs", json={"argv": ["rm", "-rf", "/"]})
    assert r.status_code == 403
    assert "'rm' is not allowed by the policy" in r.json()["detail"]
    r = ex.http.post("/exec/runs", json={"argv": ["echo"], "env": {"LD_PRELOAD": "x.so"}})
    assert (r.status_code, "LD_PRELOAD" in r.json()["detail"]) == (403, True)
    r = ex.http.post("/exec/runs", json={"argv": ["echo"], "timeout_s": 10_000})
    assert r.status_code == 403
    r = ex.http.post("/exec/runs", json={})
    assert (r.status_code, "exactly one" in r.json()["detail"]) == (400, True)
    r = ex.http.post("/exec/runs", json={"argv": ["echo"], "tiemout_s": 3})
    assert r.status_code == 400  # a typo is not silently ignored
    r = ex.http.post("/exec/runs", json={"argv": ["echo"]}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert ex.http.get("/exec/runs/nope").status_code == 404
    audit = ex.http.get("/exec/audit").json()["entries"]
    assert any(a["action"] == "refused" and a["detail"]["argv"] == ["rm", "-rf", "/"] for a in audit)


def test_shell_line_when_the_policy_allows_it(ex: ExecClient) -> None:
    run = ex.start(command="echo $GREETING | tr a-z A-Z", env={"GREETING": "hi there"})
    assert output(ex.all_events(run["id"])) == b"HI THERE\n"


def test_concurrency_cap_is_429(root: Path) -> None:
    with exec_server(root.parent / "data-cap", make_policy(root, max_concurrent=2)) as srv, ExecClient(srv.url) as ex:
        ids = [ex.start(argv=["sleep", "30"])["id"] for _ in range(2)]
        r = ex.http.post("/exec/runs", json={"argv": ["echo"]})
        assert r.status_code == 429
        assert "allows 2 at a time" in r.json()["detail"]
        for rid in ids:
            ex.http.post(f"/exec/runs/{rid}/terminate")
        for rid in ids:
            assert ex.wait_status(rid)["status"] == "terminated"


# -- who may do what ------------------------------------------------------------------------------------------


def test_no_token_is_401_everywhere(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as c:
        for method, path in [
            ("GET", "/exec/runs"),
            ("POST", "/exec/runs"),
            ("GET", "/exec/runs/x/events"),
            ("POST", "/exec/runs/x/input"),
            ("GET", "/exec/audit"),
            ("GET", "/exec/events"),
        ]:
            r = c.request(method, path, json={} if method == "POST" else None)
            assert r.status_code == 401, (method, path)
            assert r.headers["www-authenticate"] == "Bearer"
        r = c.get("/exec/runs", headers={"Authorization": "Bearer wrong-token"})
        assert r.status_code == 401
        assert c.get("/exec/").status_code == 200  # the page itself (it asks for the token)


def test_viewer_token_watches_but_cannot_act(ex: ExecClient, server: LiveServer) -> None:
    run = ex.start(argv=["cat"])
    other = ex.start(argv=["echo", "private"])
    minted = ex.http.post("/exec/tokens", json={"run_id": run["id"], "label": "pat"}).json()
    assert minted["url"].startswith("/exec/#token=v_")
    with ExecClient(server.url, minted["token"]) as viewer:
        assert viewer.http.get("/exec/me").json() == {"role": "viewer", "name": "viewer:pat", "run_id": run["id"]}
        assert [r["id"] for r in viewer.http.get("/exec/runs").json()["runs"]] == [run["id"]]
        r = viewer.send(run["id"], "nope\n")
        assert r.status_code == 403
        assert "read-only viewer" in r.json()["detail"]
        assert viewer.signal(run["id"], "KILL").status_code == 403
        assert viewer.http.post("/exec/runs", json={"argv": ["echo"]}).status_code == 403
        assert viewer.http.get(f"/exec/runs/{other['id']}/events").status_code == 403
        ex.send(run["id"], "seen by both\n", eof=True)
        assert output(viewer.all_events(run["id"])) == b"seen by both\n"
    assert ex.http.delete(f"/exec/tokens/{minted['id']}").status_code == 200
    with ExecClient(server.url, minted["token"]) as revoked:
        assert revoked.http.get("/exec/runs").status_code == 401


def test_login_exchanges_the_token_for_an_httponly_cookie(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as c:
        assert c.post("/exec/login", json={"token": "wrong"}).status_code == 401
        r = c.post("/exec/login", json={"token": TOKEN, "name": "Grace"})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        assert "Path=/;" in cookie  # the whole origin: the shared connection (/sse/mux) carries it
        assert TOKEN not in cookie
        assert c.get("/exec/me").json() == {"role": "operator", "name": "Grace", "run_id": None}
        run = c.post("/exec/runs", json={"argv": ["echo", "hi"]}).json()
        assert run["owner"] == "Grace"
        c.post("/exec/logout")
        assert c.get("/exec/me").status_code == 401


def test_list_and_audit_say_who_ran_what(ex: ExecClient, root: Path) -> None:
    run = ex.start(argv=["echo", "audited"])
    ex.wait_status(run["id"])
    (row,) = [r for r in ex.http.get("/exec/runs").json()["runs"] if r["id"] == run["id"]]
    assert row["status"] == "exited"
    assert row["exit_code"] == 0
    assert row["owner"] == "operator"
    assert row["duration_s"] is not None
    assert row["command"] == "echo audited"
    entries = ex.http.get("/exec/audit", params={"run_id": run["id"]}).json()["entries"]
    actions = {e["action"]: e for e in entries}
    assert actions["start"]["detail"]["argv"] == ["echo", "audited"]
    assert actions["start"]["detail"]["cwd"] == str(root.resolve())
    assert actions["start"]["addr"] == "127.0.0.1"
    assert actions["end"]["detail"]["status"] == "exited"
