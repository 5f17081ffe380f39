"""A run's stream on one instance is a hub topic read from its log (issue 17.3).

What a user sees: a late joiner to a run with more output than one page of history gets every
byte, in order, then ``exit``; a resume from any id it was given continues at exactly that
byte; and a run whose log lost its exit record (the disk was full when it ended) still ends its
streams with an ``exit`` event, instead of a stream that just stops (the browser would then
reconnect for ever).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from remote_exec.runlog import RunLog
from tests.rig import LiveServer

from .helpers import ExecClient, exec_server, make_policy, output

# About 0.9 MB in 30 writes: far more than one page of history (8 events of at most 64 KiB).
WRITE = "import sys\nfor i in range(30): sys.stdout.write(f'{i:04d}' + 'x' * 30000 + '\\n'); sys.stdout.flush()"
BIG = ["python3", "-c", WRITE]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("exec-topics")
    (base / "work").mkdir()
    return base


@pytest.fixture(scope="module")
def server(data: Path) -> Iterator[LiveServer]:
    with exec_server(data / "data", make_policy(data / "work")) as srv:
        yield srv


@pytest.fixture
def ex(server: LiveServer) -> Iterator[ExecClient]:
    with ExecClient(server.url) as client:
        yield client


def expected() -> bytes:
    return b"".join(f"{i:04d}".encode() + b"x" * 30000 + b"\n" for i in range(30))


def test_a_late_joiner_gets_every_byte_in_order_then_exit(ex: ExecClient) -> None:
    run = ex.start(argv=BIG)
    ex.wait_status(run["id"])
    events = ex.all_events(run["id"])
    got = output(events)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(expected()).hexdigest(), len(got)
    assert [e.event for e in events].count("exit") == 1
    # Resume from ids across the whole history: each continues at exactly that byte.
    ids = [(i, e.id) for i, e in enumerate(events) if e.event == "stdout"]
    for i, event_id in ids[:: max(1, len(ids) // 5)]:
        rest = ex.all_events(run["id"], last_id=event_id)
        before = output(events[: i + 1])
        assert before + output(rest) == expected()
    # From the exit's own id: nothing more will come (204, EventSource stops).
    r = ex.http.get(f"/exec/runs/{run['id']}/events", headers={"Last-Event-ID": events[-1].id})
    assert r.status_code == 204


def test_a_log_without_its_exit_record_still_ends_with_exit(ex: ExecClient, data: Path) -> None:
    run = ex.start(argv=["sh", "-c", "echo hello"])
    ex.wait_status(run["id"])
    path = data / "data" / "exec-runs" / f"{run['id']}.log"
    assert path.exists(), sorted(p.name for p in path.parent.iterdir())
    with RunLog(path) as log:
        ends = log._scan()
    path.write_bytes(path.read_bytes()[: ends[-2]])  # the exit frame is gone, as after a full disk
    events = ex.all_events(run["id"])  # the old server ended the stream without `exit`
    assert output(events) == b"hello\n"
    exit_info = json.loads(events[-1].data)
    assert exit_info["status"] == "unknown"
    assert "exit record" in exit_info["reason"]
