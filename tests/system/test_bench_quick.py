"""The benchmark's quick mode runs in CI: it fails if our hub loses or reorders any event."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_bench_quick_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    ours = [r for r in rows if r["impl"] == "hub"]
    assert {r["scenario"] for r in ours} == {"burst", "paced", "idle", "reconnect_storm", "correlation"}
    # Round trips asked for by the server itself and through POST /bidi/trigger, each answered.
    rpc = [r for r in ours if r["scenario"] == "correlation"]
    assert sorted(r["via"] for r in rpc) == ["server", "trigger"]
    assert all(r["round_trips"] > 0 and r["answers_posted"] >= r["round_trips"] for r in rpc), rpc
    for row in ours:
        assert row.get("lost", 0) == 0, row
        assert row.get("order_errors", 0) == 0, row
        assert row.get("errors", 0) == 0, row
