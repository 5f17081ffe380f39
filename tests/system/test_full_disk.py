"""Issue 14.8: a full disk is the server's trouble, said as **503** with ``Retry-After`` (was a
500 from ``sqlite3.OperationalError``), nothing half-stored, no file descriptor left open, and
everything works again once there is room; the messages stored before are all still there.

A real full disk: each app's data directory is a small tmpfs (needs root, as CI and this
machine are), filled with a file until the kernel says ENOSPC.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat.app import create_app as chat_app
from remote_exec.app import create_app as exec_app
from tests.rig import LiveServer, tmpfs, wait_until

TOKEN = "full-disk-operator-token-0123456789"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "size=4m") as where:
        yield where


def fill(disk: Path) -> Path:
    """Write zeros until the disk is full; returns the filler (delete it to make room)."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert int(r.headers["retry-after"]) > 0
    assert "disk is full" in r.json()["detail"], r.json()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_chat_on_a_full_disk_answers_503_and_loses_nothing(small_disk: Path) -> None:
    with LiveServer(lambda: chat_app(small_disk)) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        assert http.post("/chat/session", json={"name": "alice"}).status_code == 200
        before = http.post("/chat/rooms/general/messages", json={"text": "kept", "client_msg_id": "m1"})
        assert before.status_code == 201, before.text
        filler = fill(small_disk)
        for i in range(3):
            assert_unavailable(
                http.post("/chat/rooms/general/messages", json={"text": f"x{i}" * 2000, "client_msg_id": f"f{i}"})
            )
        up = http.post(
            "/chat/rooms/general/files",
            params={"name": "cat.png", "client_msg_id": "up1"},
            content=PNG * 1000,
            headers={"Content-Type": "image/png"},
        )
        assert_unavailable(up)
        filler.unlink()
        # Room again: the same client_msg_id goes through once; what was stored before is there.
        again = http.post("/chat/rooms/general/messages", json={"text": "x0" * 2000, "client_msg_id": "f0"})
        assert again.status_code == 201, again.text
        texts = [m["text"] for m in http.get("/chat/rooms/general/messages").json()["messages"]]
        assert texts.count("kept") == 1
        assert texts.count("x0" * 2000) == 1


def test_exec_on_a_full_disk_answers_503_and_leaves_no_fd_open(small_disk: Path) -> None:
    app = lambda: exec_app(small_disk, token=TOKEN)  # noqa: E731
    with LiveServer(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ok = http.post("/exec/runs", json={"argv": ["echo", "before"]}, headers=auth)
        assert ok.status_code == 201, ok.text
        run_id = ok.json()["id"]
        wait_until(lambda: http.get(f"/exec/runs/{run_id}", headers=auth).json()["status"] != "running", what="exit")
        filler = fill(small_disk)
        fds = open_fds()
        for _ in range(5):
            assert_unavailable(http.post("/exec/runs", json={"argv": ["echo", "full"]}, headers=auth))
        assert open_fds() <= fds, "a failed start left its run-log fd open"
        assert_unavailable(http.post("/exec/login", json={"token": TOKEN}))
        assert_unavailable(http.post("/exec/tokens", json={"label": "viewer"}, headers=auth))
        filler.unlink()
        after = http.post("/exec/runs", json={"argv": ["echo", "after"]}, headers=auth)
        assert after.status_code == 201, after.text
        assert http.post("/exec/login", json={"token": TOKEN}).status_code == 200
        runs = http.get("/exec/runs", headers=auth).json()["runs"]
        assert [r["argv"] for r in runs if r["argv"][1] in ("before", "after", "full")].count(["echo", "full"]) == 0
