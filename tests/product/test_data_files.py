"""Issue 14: the data the product writes is its user's alone, and a data directory it cannot use
is said in one line.

``python -m showcase`` as users run it: after a chat message and an upload, an exec run and a
dashboard login, every file under ``--data-dir`` is ``0600`` and every directory it made ``0700``
(chat history and its signing key, exec argv and audit, run logs, uploads were 0644)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.datadir import private_file
from tests.product.rig import DASHBOARD_TOKEN, EXEC_TOKEN, ROOT, Product
from tests.rig import tmpfs

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if not p.is_symlink()}


def test_every_file_the_product_writes_is_its_users_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"  # made by the server
    product = Product(tmp_path / "rig", "--data-dir", str(data)).start()  # the last --data-dir wins
    try:
        with httpx.Client(base_url=product.url, timeout=10) as http:
            assert http.post("/chat/session", json={"name": "alice"}).status_code == 200
            sent = http.post("/chat/rooms/general/messages", json={"text": "secret plans", "client_msg_id": "m1"})
            assert sent.status_code in (200, 201), sent.text
            up = http.post(
                "/chat/rooms/general/files",
                params={"name": "cat.png", "client_msg_id": "f1"},
                content=PNG,
                headers={"Content-Type": "image/png"},
            )
            assert up.status_code in (200, 201), up.text
            auth = {"Authorization": f"Bearer {EXEC_TOKEN}"}
            run = http.post("/exec/runs", json={"argv": ["echo", "hello"]}, headers=auth)
            assert run.status_code == 201, run.text
            login = http.post("/dashboard/login", json={"token": DASHBOARD_TOKEN})
            assert login.status_code == 200, login.text
        deadline = time.monotonic() + 10
        while not any((data / "exec-runs").glob("*")):  # the run's log
            assert time.monotonic() < deadline, modes(data)
            time.sleep(0.1)
    finally:
        product.stop()
    found = modes(data)
    files = {p: m for p, m in found.items() if (data / p).is_file()}
    dirs = {p: m for p, m in found.items() if (data / p).is_dir()}
    assert {"chat.sqlite3", "exec.sqlite3", "dashboard.sqlite3"} <= set(files), found
    assert any(p.startswith("exec-runs/") for p in files), found
    assert "chat-secret.key" in files, found
    assert any(p.startswith("chat-files/") for p in files), found  # the upload
    wide = {p: oct(m) for p, m in files.items() if m != 0o600}
    assert not wide, f"data files others can read: {wide}"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert {p: oct(m) for p, m in dirs.items() if m != 0o700} == {}


def test_a_file_an_older_version_left_readable_is_closed_on_open(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    db.write_bytes(b"")
    Path(f"{db}-wal").write_bytes(b"")
    os.chmod(db, 0o644)
    os.chmod(f"{db}-wal", 0o644)
    private_file(db)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{db}-wal").stat().st_mode) == 0o600


def _start(data_dir: str, module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, "--port", "1", "--data-dir", data_dir],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A real read-only file system."""
    with tmpfs(tmp_path / "ro", "ro,size=64k") as where:
        yield where


@pytest.mark.parametrize("module", ["showcase", "chat", "remote_exec"])
def test_a_read_only_data_dir_is_one_line_naming_it(read_only: Path, module: str) -> None:
    for target, why in ((read_only, "Read-only file system"), (read_only / "sub", "Read-only file system")):
        done = _start(str(target), module)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert str(target) in last, last
        assert why in last, last


def test_a_file_in_the_way_of_the_data_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notadir").write_text("x")
    done = _start(str(tmp_path / "notadir"), "dashboard")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{tmp_path / 'notadir'}" in done.stderr.strip().splitlines()[-1]
