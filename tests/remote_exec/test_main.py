"""``python -m remote_exec``: a generated token printed with a login URL; loopback only by default."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.rig import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_generated_token_is_printed_with_a_login_url(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REMOTE_EXEC_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "remote_exec", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + 20
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            match = re.search(rf"(http://127\.0\.0\.1:{port}/exec/#token=(\S+))", line)
            if match:
                url, token = match.group(1), match.group(2)
        assert url is not None, "no login URL printed"
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/exec/me", headers={"Authorization": f"Bearer {token}"})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.1)
        assert r.json()["role"] == "operator"
        assert httpx.get(f"http://127.0.0.1:{port}/exec/me").status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_non_loopback_bind_is_refused_without_allow_remote(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "remote_exec", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "refusing to listen on '0.0.0.0'" in result.stderr


def test_a_bad_policy_file_stops_the_server_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text("[runs]\nmax_concurent = 2\n")
    result = subprocess.run(
        [sys.executable, "-m", "remote_exec", "--policy", str(bad), "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "unknown key runs.max_concurent" in result.stderr


def test_a_short_token_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    """``REMOTE_EXEC_TOKEN=short`` (or ``--token``/``--exec-token``): exit 2 with the rule, for
    ``python -m remote_exec`` and ``python -m showcase`` alike."""
    env = {**os.environ, "REMOTE_EXEC_TOKEN": "short"}
    data = str(tmp_path / "data")
    commands = [["remote_exec"], ["showcase"], ["remote_exec", "--token", "tiny"], ["showcase", "--exec-token", "tiny"]]
    for cmd in commands:
        run = subprocess.run(
            [sys.executable, "-m", *cmd, "--port", str(free_port()), "--data-dir", data],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 2, (cmd, run.stderr)
        assert "Traceback" not in run.stderr, run.stderr
        source = cmd[-1] if len(cmd) > 1 else "$REMOTE_EXEC_TOKEN"
        source = {"tiny": "--token" if cmd[0] == "remote_exec" else "--exec-token"}.get(source, source)
        assert f"the exec operator token from {source} has" in run.stderr, run.stderr
        assert "at least 16" in run.stderr
