"""``python -m bench peers``: every peer (ours, naive, sse-starlette, Go) starts, serves 50
subscribers, and every event of every scenario arrives at every one of them, once and in order,
through the bench's own load client; the side-by-side table and the ratios print.

A broken peer, or a load client that drops or miscounts events, fails here rather than skewing
the published figures. One quick run (~30 s) serves all the checks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.load import ConnResult, Done, SseStream
from bench.peers import PEERS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("peers") / "peers.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "peers", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())["rows"]


@pytest.mark.parametrize("impl", list(PEERS))
def test_each_peer_delivers_every_event_in_order(impl: str, quick_run: tuple[str, list[dict[str, Any]]]) -> None:
    stdout, rows = quick_run
    if impl == "go" and shutil.which("go") is None and not Path("/usr/bin/go").exists():
        assert "go: skipped: go is not installed" in stdout, stdout
        pytest.skip("go is not installed (apt-get install golang-go): the Go peer is skipped")
    mine = [r for r in rows if r["impl"] == impl]
    assert {r["scenario"] for r in mine} == {"burst", "paced", "conns"}, stdout
    for row in mine:
        assert row.get("subscribers", row.get("connections")) == 50, row
        assert row["deliveries"] == row["expected"] > 0, row
        assert (row["gaps"], row["dups"], row["reorders"], row["late"]) == (0, 0, 0, 0), row
    burst = next(r for r in mine if r["scenario"] == "burst")
    assert burst["expected"] == 50 * 200
    assert burst["deliveries_per_s"] > 0, burst
    assert burst["cpu_s_per_M"] is not None, burst  # CPU read from the server process itself
    conns = next(r for r in mine if r["scenario"] == "conns")
    assert isinstance(conns["kib_per_conn"], float), conns  # and its RSS


def test_the_side_by_side_table_prints(quick_run: tuple[str, list[dict[str, Any]]]) -> None:
    stdout, rows = quick_run
    ran = sorted({r["impl"] for r in rows})
    for header in ("deliveries_per_s  cpu_s_per_M", "p50_ms  p99_ms", "kib_per_conn", "ratios, ours / theirs"):
        assert header in stdout, stdout
    ratio_head = next(line for line in stdout.splitlines() if line.startswith("metric"))
    assert ratio_head.split() == ["metric", *[n for n in PEERS if n in ran and n != "hub"]], ratio_head
    assert "burst deliveries/s" in stdout, stdout
    assert "paced 100/s p99" in stdout, stdout


def _chunk(text: str) -> bytes:
    data = text.encode()
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(seq: int) -> str:
    return f'id: {seq}\nevent: tick\ndata: {{"seq": {seq}, "t": 1.5, "pad": "xx"}}\n\n'


async def test_the_load_client_counts_gaps_duplicates_and_reorders() -> None:
    """What the table's gaps/dups/reorders columns rest on: seq 1 2 4 3 3 6 7 is one reorder (3
    came after 4), one duplicate (3 again), and one gap (5 never came)."""
    res = ConnResult()
    stream = SseStream(b"", res, want=7, keep_latency=False, strict=True, done=Done())
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    stream.data_received(head + _chunk(_event(1) + _event(2)))
    for seq in (4, 3, 3, 6, 7):
        stream.data_received(_chunk(_event(seq)))
    assert (res.received, res.dups, res.reorders, sorted(res.missing)) == (7, 1, 1, [5])


def test_without_go_the_go_peer_is_skipped_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import bench.peers as peers

    monkeypatch.setattr("bench.peers.shutil.which", lambda name: None)
    monkeypatch.setattr("bench.peers.os.access", lambda path, mode: False)
    with pytest.raises(peers.Unavailable, match=r"^go is not installed \(apt-get install golang-go\)"):
        peers.PEERS["go"].command(peers.Options(tmp_path))
