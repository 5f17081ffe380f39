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

from tests.product.rig import ROOT, Product

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
