"""``--workers N``: refused on the memory backend, served by N processes on a shared Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from shared.serve_cli import check_workers
from tests.rig import RedisServer, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_several_workers_on_the_memory_backend_are_refused_with_a_reason() -> None:
    with pytest.raises(SystemExit, match=r"refusing --workers 2 with the memory backend.*redis://"):
        check_workers(2, "memory://")
    with pytest.raises(SystemExit, match="at least 1"):
        check_workers(0, "redis://127.0.0.1:6379/0")
    check_workers(1, "memory://")
    check_workers(4, "redis://127.0.0.1:6379/0")


def test_the_command_line_refuses_before_binding_anything(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "showcase", "--port", str(port), "--workers", "2", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SSE_BACKEND": ""},
    )
    assert result.returncode != 0
    assert "refusing --workers 2 with the memory backend" in result.stderr


@pytest.mark.redis
def test_two_workers_share_one_port_and_stop_together(redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "showcase", "--port", str(port), "--workers", "2", "--backend", redis_server.url]
    proc = subprocess.Popen(
        [*cmd, "--data-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(pids) < 2:
            try:
                # A fresh connection each time, so the kernel spreads them over both workers.
                with httpx.Client(timeout=5) as client:
                    reply = client.get(f"http://127.0.0.1:{port}/basics/interval")
                if reply.status_code == 200:
                    pids |= {c.pid for c in psutil.Process(proc.pid).children() if c.is_running()}
            except httpx.TransportError:
                time.sleep(0.2)
        # (multiprocessing may also start its resource tracker; it is not a worker.)
        workers = [c for c in psutil.Process(proc.pid).children() if "resource_tracker" not in " ".join(c.cmdline())]
        assert len(workers) == 2, "the supervisor runs two worker processes"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert out.count("Application shutdown complete") == 2, out
        wait_until(
            lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers),
            what="the workers to exit",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
