"""The test rig: real uvicorn servers on free loopback ports, a real redis-server, SSE helpers.

Everything here starts what it needs and stops it in ``finally``; nothing assumes a port is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from shared.server import Server, make_config

__all__ = ["LiveServer", "RedisServer", "free_port", "read_events"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass
class LiveServer:
    """An ASGI app under a real uvicorn (our ``Server``) in a thread, on 127.0.0.1.

    ``restart()`` stops it and serves a fresh app from ``factory`` on the same port, so clients
    can reconnect to "the same server" after a restart.
    """

    factory: Callable[[], Any]
    port: int = 0
    app: Any = None
    server: Server | None = None
    thread: threading.Thread | None = None
    stop_seconds: float = field(default=0.0)
    config: dict[str, Any] = field(default_factory=dict)  # more uvicorn settings (make_config)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.app = self.factory()
        sock = _bind(self.port)
        self.port = sock.getsockname()[1]
        config = make_config(self.app, "127.0.0.1", self.port, log_level="warning", **self.config)
        self.server = Server(config, self.app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> float:
        """Ask uvicorn to shut down gracefully; returns how long it took."""
        assert self.server is not None
        assert self.thread is not None
        began = time.monotonic()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.stop_seconds = time.monotonic() - began
        if self.thread.is_alive():
            raise RuntimeError("test server did not stop within 30 s")
        return self.stop_seconds

    def restart(self) -> LiveServer:
        self.stop()
        return self.start()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.stop()


def read_events(
    url: str,
    *,
    n: int,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    client: httpx.Client | None = None,
) -> list[ServerSentEvent]:
    """Connect, read ``n`` events (comments skipped), disconnect."""
    own = client is None
    c = client or httpx.Client(timeout=httpx.Timeout(timeout))
    out: list[ServerSentEvent] = []
    try:
        with connect_sse(c, "GET", url, headers=headers or {}) as source:
            source.response.raise_for_status()
            for sse in source.iter_sse():
                if sse.event == "message" and not sse.data and not sse.id:
                    continue  # httpx-sse yields an empty event after a comment-only block (#35)
                out.append(sse)
                if len(out) >= n:
                    break
    finally:
        if own:
            c.close()
    return out


class RedisServer:
    """A throwaway ``redis-server`` on a free port; no persistence unless ``aof_dir`` is given.

    With ``aof_dir``, every write is fsynced to an append-only file there before Redis answers
    (``appendfsync always``), the setting under which "acknowledged" survives a ``kill -9`` of
    Redis: :meth:`kill` then :meth:`start` again on the same port keeps the data.
    """

    def __init__(self, aof_dir: Path | None = None) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if aof_dir is None:
            self._cmd += ["--appendonly", "no"]
        else:
            aof_dir.mkdir(parents=True, exist_ok=True)
            self._cmd += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(aof_dir)]
        self.proc: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """``kill -9``: no shutdown, no final save; clients see connections reset."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    @contextlib.contextmanager
    def running(self) -> Iterator[RedisServer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``check`` (from a sync test) until true. Pages have a CSP without 'unsafe-eval', so
    Playwright's string predicates cannot run in them; Python-side polling can."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


async def until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """:func:`wait_until` for async tests: poll ``check`` without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at ``where`` (``options``: ``size=4m``, ``ro,size=64k``): a disk that
    fills up, or a read-only one. Needs root, as CI and this machine have; skips the test otherwise."""
    where.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}) here: {made.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
