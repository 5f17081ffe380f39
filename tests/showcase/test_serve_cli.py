"""What `./run serve` (`python -m showcase`) and each app's `python -m` print at start (issue 18).

Real child processes on free loopback ports, as a newcomer runs them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.product.rig import EXEC_TOKEN, ROOT, Product

TOKEN_ENVS = ("REMOTE_EXEC_TOKEN", "DASHBOARD_CONTROL_TOKEN", "SSE_BACKEND")


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another server listens on for the whole test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("module", ["showcase", "chat", "dashboard", "remote_exec"])
def test_a_port_in_use_is_one_line_and_exit_2_before_any_token(module: str, held_port: int, tmp_path: Path) -> None:
    # Without the tokens in the environment, so that each app would generate and print one.
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_ENVS}
    done = subprocess.run(
        [sys.executable, "-m", module, "--port", str(held_port), "--data-dir", str(tmp_path / "data")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""  # no URL, no token, no login link
    assert done.stderr.strip().splitlines() == [
        f"port {held_port} is in use (127.0.0.1:{held_port}: another server listens there): pick another with --port"
    ]


def test_serve_prints_the_url_of_every_app_and_each_answers(tmp_path: Path) -> None:
    product = Product(tmp_path / "data").start()
    try:
        printed = product.output().splitlines()
        for path in ("/", "/basics/", "/bidi/", "/chat/", "/dashboard/", "/exec/"):
            url = product.url + path
            assert any(line.split()[:1] == [url] for line in printed), f"{url} not printed: {printed}"
            page = httpx.get(url, timeout=10)
            assert page.status_code == 200, url
            assert page.headers["content-type"].startswith("text/html"), url
    finally:
        product.stop()


def test_the_readme_repl_demo_policy_runs_python3_and_the_default_refuses_it(tmp_path: Path) -> None:
    """The exec README says which policy the REPL demo needs, with the flag `./run serve` takes."""
    readme = (ROOT / "remote_exec" / "README.md").read_text()
    (line,) = [ln for ln in readme.splitlines() if ln.startswith("./run serve --exec-policy ")]
    args = line.split("#")[0].split()[2:]
    assert args == ["--exec-policy", "remote_exec/dev_policy.toml"]
    repl = {"argv": ["python3", "-q"], "pty": True}
    for policy_args, expected in ((args, 201), ([], 403)):
        product = Product(tmp_path / f"data{len(policy_args)}", *policy_args).start()
        try:
            with httpx.Client(base_url=product.url, headers={"Authorization": f"Bearer {EXEC_TOKEN}"}) as ex:
                r = ex.post("/exec/runs", json=repl, timeout=10)
                assert r.status_code == expected, r.text
                if expected == 201:
                    assert ex.post(f"/exec/runs/{r.json()['id']}/terminate", timeout=10).status_code < 300
                else:
                    assert r.json()["extra"]["rule"] == "commands.allow"
        finally:
            product.stop()
