"""The default exec policy on the combined server (a real uvicorn), as an attacker with the
operator token would try it (issue 14 part 3): reading secrets, leaving the allowed directory,
setting the clock. Each is a 403 JSON naming the rule and how to allow it, and nothing starts;
the ordinary forms still run and stream."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from remote_exec import Policy
from remote_exec.settings import ExecSettings
from showcase.app import Settings, create_app
from tests.rig import LiveServer

from .helpers import TOKEN, ExecClient, output

# The app's own README holds its demo commands (issue 17: the top README no longer does).
README = Path(__file__).resolve().parents[2] / "remote_exec" / "README.md"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the server was started in, laid out like a real one: its data dir inside."""
    work = tmp_path_factory.mktemp("default-policy") / "work"
    (work / "sub").mkdir(parents=True)
    (work / "notes.txt").write_text("first line\nsecond line\nthird line\n")
    (work / "sub" / "deep.txt").write_text("deep\n")
    (work / "alias.txt").symlink_to(work / "notes.txt")  # a symlink that stays inside
    (work / "to-passwd").symlink_to("/etc/passwd")
    (work / "to-etc").symlink_to("/etc")
    (work / "to-data").symlink_to(work / ".data")
    # Another server's data dir next to ours (docs/operations.md: --data-dir .data-1, .data-2).
    (work / ".data-2").mkdir()
    (work / ".data-2" / "chat-secret.key").write_bytes(b"another server's signing key")
    return work


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[LiveServer]:
    settings = Settings(data_dir=root / ".data", exec=ExecSettings(token=TOKEN, policy=Policy.default(base=root)))
    with LiveServer(lambda: create_app(settings)) as srv:
        yield srv


@pytest.fixture
def ex(server: LiveServer) -> Iterator[ExecClient]:
    with ExecClient(server.url) as client:
        yield client


def chat_key(server: LiveServer, root: Path) -> bytes:
    """The combined server's real chat signing key (made when the chat first needs it)."""
    key = root / ".data" / "chat-secret.key"
    if not key.exists():
        httpx.post(server.url + "/chat/session", json={"name": "keymaker"}).raise_for_status()
    deadline = time.monotonic() + 5
    while not key.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return key.read_bytes()


REFUSED = [
    # reading files outside the allowed directory, however spelled
    (["cat", "/etc/passwd"], None, "files.outside"),
    (["cat", "/etc/shadow"], None, "files.outside"),
    (["head", "--lines=3", "../../etc/passwd"], None, "files.outside"),
    (["head", "-n3", "--", "/etc/passwd"], None, "files.outside"),
    (["tail", "-n", "1", "notes.txt", "/etc/passwd"], None, "files.outside"),  # options and files mixed
    (["tail", "-f", "/etc/passwd"], None, "files.outside"),
    (["cat", "to-passwd"], None, "files.outside"),  # a symlink inside, pointing out
    (["cat", "to-etc/passwd"], None, "files.outside"),
    (["ls", "-la", "/"], None, "files.outside"),
    (["ls", "sub", "-l", "/root"], None, "files.outside"),
    (["grep", "-f", "/etc/passwd", "x"], None, "files.outside"),
    (["grep", "--file=/etc/passwd", "x", "notes.txt"], None, "files.outside"),
    (["date", "-r", "/etc/passwd"], None, "files.outside"),
    (["wc", "-l", "../../../../../../etc/passwd"], None, "files.outside"),
    # the server's data directory and other secrets, even inside the allowed directory
    (["cat", ".data/chat-secret.key"], None, "files.data_dir"),
    (["cat", "to-data/chat-secret.key"], None, "files.data_dir"),
    (["grep", "-c", "", ".data/exec.sqlite3"], None, "files.data_dir"),
    (["ls"], ".data", "files.data_dir"),
    (["cat", ".data-2/chat-secret.key"], None, "files.deny"),
    (["cat", "/proc/self/environ"], None, "files.system"),
    # options that reach past the rules
    (["grep", "-r", "x", "/"], None, "args.option"),
    (["grep", "-rn", "secret", "."], None, "args.option"),
    (["grep", "--recursive", "key"], None, "args.option"),
    (["grep", "-d", "recurse", "key", "."], None, "args.option"),
    (["ls", "-R"], None, "args.option"),
    (["wc", "--files0-from=notes.txt"], None, "args.option"),
    (["cat", "--show-al", "notes.txt"], None, "args.option"),  # getopt would take the prefix
    # setting the clock. "now", and the current second below: where the rule is missing (the old
    # code, as root) the clock is set to what it already was, not to another year; a run of this
    # test against the old code once set a machine's clock back 25 years.
    (["date", "-s", "now"], None, "args.option"),
    (["date", "--set=now"], None, "args.option"),
    (["date", "--se", "now"], None, "args.option"),
    (["date", "-us", "now"], None, "args.option"),
    (["date", "-u", "NOW"], None, "args.operand"),  # MMDDhhmmCCYY.ss, filled in below
]


@pytest.mark.parametrize(("argv", "cwd", "rule"), REFUSED, ids=[" ".join(a) for a, _, _ in REFUSED])
def test_refused_with_403_naming_the_rule(ex: ExecClient, argv: list[str], cwd: str | None, rule: str) -> None:
    argv = [time.strftime("%m%d%H%M%Y.%S", time.gmtime()) if a == "NOW" else a for a in argv]
    before = len(ex.http.get("/exec/runs").json()["runs"])
    r = ex.http.post("/exec/runs", json={"argv": argv, **({"cwd": cwd} if cwd else {})})
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["extra"]["rule"] == rule, body
    assert body["extra"]["allow"], body  # says how to allow it, or that nothing can
    assert body["detail"]
    assert len(ex.http.get("/exec/runs").json()["runs"]) == before  # nothing started
    audit = ex.http.get("/exec/audit", params={"limit": 5}).json()["entries"]
    assert any(a["action"] == "refused" and a["detail"]["reason"].startswith(rule) for a in audit), audit


def test_the_chat_signing_key_is_not_readable_however_asked(ex: ExecClient, server: LiveServer, root: Path) -> None:
    key = chat_key(server, root)
    data = root / ".data"
    tries = [
        ["cat", str(data / "chat-secret.key")],
        ["cat", ".data/./chat-secret.key"],
        ["cat", "sub/../.data/chat-secret.key"],
        ["head", "-c", "64", "to-data/chat-secret.key"],
        ["grep", "-a", "", ".data/chat-secret.key"],
        ["wc", "-c", ".data/chat-secret.key"],
        ["tail", "-c+1", ".data/chat-secret.key"],
        ["date", "-f", ".data/chat-secret.key"],
    ]
    for argv in tries:
        r = ex.http.post("/exec/runs", json={"argv": argv})
        assert (r.status_code, r.json()["extra"]["rule"]) == (403, "files.data_dir"), (argv, r.text)
    runs = ex.http.get("/exec/runs").json()["runs"]
    for run in runs:
        assert key not in ex.http.get(f"/exec/runs/{run['id']}/output", params={"stream": "all"}).content


def test_allowed_forms_still_run_and_stream(ex: ExecClient, root: Path) -> None:
    year = time.strftime("%Y", time.gmtime())
    cases: list[tuple[list[str], str | None, bytes]] = [
        (["date", "-u", "+%Y"], None, f"{year}\n".encode()),
        (["cat", "notes.txt"], None, b"first line\nsecond line\nthird line\n"),
        (["cat", "-n", "alias.txt"], None, b"     1\tfirst line\n"),
        (["cat", str(root / "sub" / "deep.txt")], None, b"deep\n"),
        (["cat", "../notes.txt"], "sub", b"first line\n"),  # relative to the run's cwd
        (["head", "-n1", "notes.txt"], None, b"first line\n"),
        (["head", "-2", "notes.txt"], None, b"first line\nsecond line\n"),
        (["tail", "--lines=1", "notes.txt"], None, b"third line\n"),
        (["grep", "-n", "second", "notes.txt"], None, b"2:second line\n"),
        (["grep", "-e", "third", "--", "notes.txt"], None, b"third line\n"),
        (["wc", "-l", "notes.txt", "sub/deep.txt"], None, b"3 notes.txt\n"),
        (["ls"], None, b"notes.txt\n"),
        (["ls", "-la", "sub"], None, b"deep.txt\n"),
        (["echo", "/etc/passwd"], None, b"/etc/passwd\n"),  # echo has no file arguments
        (["date", "-d", "2001-02-03", "+%F"], None, b"2001-02-03\n"),
    ]
    for argv, cwd, expected in cases:
        run = ex.start(argv=argv, **({"cwd": cwd} if cwd else {}))
        events = ex.all_events(run["id"])
        out = output(events)
        assert expected in out, (argv, out, output(events, "stderr"))
        assert json.loads(events[-1].data)["code"] == 0, (argv, events[-1].data)


def test_tail_follow_inside_streams_live(ex: ExecClient, root: Path) -> None:
    log = root / "growing.log"
    log.write_text("start\n")
    run = ex.start(argv=["tail", "-n", "+1", "-f", "growing.log"])
    with ex.events(run["id"]) as it:
        got = b""
        for event in it:
            if event.event == "stdout":
                got += output([event])
                if b"start\n" in got and b"later" not in got:
                    with log.open("a") as f:
                        f.write("later\n")
                if b"later\n" in got:
                    break
    assert ex.http.post(f"/exec/runs/{run['id']}/terminate").status_code == 202
    assert ex.wait_status(run["id"])["status"] != "running"


def test_the_policy_endpoint_shows_each_commands_rule(ex: ExecClient, root: Path) -> None:
    policy = ex.http.get("/exec/policy").json()
    assert "no -s/--set" in policy["args"]["date"]
    assert "files confined" in policy["args"]["cat"]
    assert str(root / ".data") in policy["protected"]
    assert "*.key" in policy["files_deny"]


def _readme_demos() -> list[tuple[dict[str, Any], str]]:
    """The ``POST /exec/runs`` bodies in remote_exec/README.md, each with its comment
    ("default policy", or "needs ..." the policy it needs)."""
    text = README.read_text(encoding="utf-8")
    found = []
    for line in text.splitlines():
        match = re.search(r"-d '(\{.*?\})' \S+/exec/runs +# (.*)$", line)
        if match:
            found.append((json.loads(match.group(1)), match.group(2)))
    return found


def test_the_readme_demo_commands_run_under_the_default_policy_or_say_what_they_need(ex: ExecClient) -> None:
    demos = _readme_demos()
    assert len(demos) >= 5, demos
    for body, comment in demos:
        if comment.startswith("default policy"):
            run = ex.start(**body)
            events = ex.all_events(run["id"])
            assert json.loads(events[-1].data)["code"] == 0, (body, output(events, "stderr"))
        else:
            assert comment.startswith("needs "), comment  # says which policy
            r = ex.http.post("/exec/runs", json=body)
            assert r.status_code == 403, (body, r.text)
