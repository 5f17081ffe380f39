"""The product as users run it: ``python -m showcase`` (or an app) as a child process, and many
raw SSE connections to it that record every byte until the server closes them.

The streams are plain asyncio sockets, not httpx: a thousand of them cost the test almost no CPU,
so on a 2-core machine the server being measured keeps the processor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.decoder import Decoder
from shared.serve_cli import BACKEND_ENV
from tests.rig import free_port

ROOT = Path(__file__).resolve().parent.parent.parent

EXEC_TOKEN = "product-exec-token-0123456789abcdef"
DASHBOARD_TOKEN = "product-dashboard-token-0123456789"


class Product:
    """``python -m showcase --port P --data-dir D ...`` in a child process, its output in a log file."""

    def __init__(self, data_dir: Path, *args: str, module: str = "showcase", port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", module, "--port", str(self.port), "--data-dir", str(data_dir), *args]
        self.env = {k: v for k, v in os.environ.items() if k != BACKEND_ENV} | {
            "REMOTE_EXEC_TOKEN": EXEC_TOKEN,
            "DASHBOARD_CONTROL_TOKEN": DASHBOARD_TOKEN,
            "PYTHONUNBUFFERED": "1",
        }
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / f"{module}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_path: str = "/basics/interval", timeout: float = 60) -> Product:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd} exited with {self.proc.returncode}: {self.output()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + ready_path, timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.cmd} did not answer {ready_path} in {timeout} s: {self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int = signal.SIGTERM) -> float:
        """Send ``sig``; returns the time it was sent (monotonic)."""
        assert self.proc is not None
        sent = time.monotonic()
        self.proc.send_signal(sig)
        return sent

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class RawStream:
    """One SSE request on its own connection; ``raw`` gets every byte until the server closes."""

    path: str
    status: int = 0
    head: str = ""
    raw: bytearray = field(default_factory=bytearray)
    closed_at: float | None = None
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Go away as a closed tab does: the connection is dropped."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def body(self) -> bytes:
        """The response body, de-chunked (uvicorn streams with chunked transfer encoding)."""
        data = bytes(self.raw)
        if "transfer-encoding: chunked" not in self.head.lower():
            return data
        out, pos = bytearray(), 0
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(data[pos:eol].split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out += data[eol + 2 : eol + 2 + size]
            pos = eol + 2 + size + 2
        return bytes(out)

    def events(self) -> list[tuple[str, str | None, str]]:
        return [(e.event, e.id, e.data) for e in Decoder().feed(self.body())]

    def text(self) -> str:
        return self.body().decode(errors="replace")


async def open_stream(port: int, path: str, headers: dict[str, str] | None = None) -> RawStream:
    """Open ``GET path`` and read it in a task until the server closes the connection."""
    stream = RawStream(path)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def run() -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            stream.head = head.decode("latin-1")
            stream.status = int(stream.head.split(" ", 2)[1])
            stream.opened.set()
            while chunk := await reader.read(65536):
                stream.raw += chunk
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            stream.closed_at = time.monotonic()
            stream.opened.set()
            writer.close()

    stream.task = asyncio.create_task(run())
    return stream


async def open_streams(port: int, paths: list[tuple[str, dict[str, str]]], concurrency: int = 50) -> list[RawStream]:
    """Open every ``(path, headers)`` and wait until each has its response head (status 200)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(path: str, headers: dict[str, str]) -> RawStream:
        async with gate:
            stream = await open_stream(port, path, headers)
            await asyncio.wait_for(stream.opened.wait(), 30)
            return stream

    return list(await asyncio.gather(*(one(p, h) for p, h in paths)))


async def wait_body(stream: RawStream, needle: bytes, timeout: float = 10) -> None:
    """Until ``needle`` has arrived on ``stream`` (checked on the raw bytes)."""
    deadline = time.monotonic() + timeout
    while needle not in stream.raw:
        if stream.closed_at is not None or time.monotonic() > deadline:
            raise AssertionError(f"{stream.path}: {needle!r} not received; got {bytes(stream.raw[-500:])!r}")
        await asyncio.sleep(0.02)
