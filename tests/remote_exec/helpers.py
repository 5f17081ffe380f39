"""Shared bits for the remote_exec tests: a test policy, an authenticated client, SSE reading."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
from httpx_sse import ServerSentEvent, connect_sse

from remote_exec import Policy, create_app
from tests.rig import LiveServer

TOKEN = "operator-token-for-tests-0123456789"
PYTHON = "python3"


def make_policy(root: Path, **runs: Any) -> Policy:
    """A policy for tests: a few commands, a shell, cwd limited to ``root``, short grace."""
    return Policy.from_dict(
        {
            "commands": {"allow": ["python3", "sh", "echo", "printf", "sleep", "cat"], "shell": True},
            "cwd": {"allow": [str(root)], "default": str(root)},
            "env": {"pass": ["PATH", "HOME", "LANG", "LC_*"], "request": ["GREETING", "LC_*"]},
            "runs": {
                "max_concurrent": 6,
                "default_timeout_s": 60,
                "max_timeout_s": 120,
                "max_output_bytes": 1_000_000,
                "kill_grace_s": 0.5,
            }
            | runs,
            "limits": {"cpu_seconds": 60, "open_files": 200},
        }
    )


def exec_server(data_dir: Path, policy: Policy, token: str = TOKEN) -> LiveServer:
    return LiveServer(lambda: create_app(data_dir, token=token, policy=policy))


class ExecClient:
    """httpx with the operator (or another) token, and helpers for runs and their streams."""

    def __init__(self, base_url: str, token: str | None = TOKEN) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=httpx.Timeout(20.0))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ExecClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, **body: Any) -> dict[str, Any]:
        r = self.http.post("/exec/runs", json=body)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    def send(self, run_id: str, data: str = "", **extra: Any) -> httpx.Response:
        return self.http.post(f"/exec/runs/{run_id}/input", json={"data": data, **extra})

    def signal(self, run_id: str, name: str) -> httpx.Response:
        return self.http.post(f"/exec/runs/{run_id}/signal", json={"signal": name})

    @contextmanager
    def events(self, run_id: str, last_id: str | None = None) -> Iterator[Iterator[ServerSentEvent]]:
        """The run's events (heartbeat comments skipped) as an iterator, while connected."""
        headers = {"Last-Event-ID": last_id} if last_id else {}
        with connect_sse(self.http, "GET", f"/exec/runs/{run_id}/events", headers=headers) as source:
            source.response.raise_for_status()
            yield (e for e in source.iter_sse() if e.event != "message" or e.data or e.id)

    def all_events(self, run_id: str, last_id: str | None = None) -> list[ServerSentEvent]:
        """Everything up to and including ``exit`` (the server ends the stream there)."""
        with self.events(run_id, last_id) as it:
            out = list(it)
        assert out, "the stream ended with no event"
        assert out[-1].event == "exit", [e.event for e in out[-3:]]
        return out

    def wait_status(self, run_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run: dict[str, Any] = self.http.get(f"/exec/runs/{run_id}").json()
            if run["status"] != "running":
                return run
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} still running after {timeout}s")


def chunk(event: ServerSentEvent) -> bytes:
    data = json.loads(event.data)
    if "b64" in data:
        return base64.b64decode(data["b64"])
    return str(data["text"]).encode()


def output(events: list[ServerSentEvent], *names: str) -> bytes:
    names = names or ("stdout",)
    return b"".join(chunk(e) for e in events if e.event in names)


def read_until(it: Iterator[ServerSentEvent], needle: bytes, names: tuple[str, ...] = ("stdout",)) -> bytes:
    """Read events until the bytes of ``names`` contain ``needle``; returns those bytes."""
    got = b""
    seen = []
    for e in it:
        seen.append((e.event, e.data[:120]))
        if e.event in names:
            got += chunk(e)
            if needle in got:
                return got
        if e.event == "exit":
            break
    raise AssertionError(f"{needle!r} never arrived; got {got[-300:]!r}; events {seen[-5:]}")


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


class Watcher:
    """A stream read in a thread, as a viewer's browser would: every event with the time it came,
    and when the server ended the stream (``ended``); ``status`` is the answer's HTTP status."""

    def __init__(self, url: str, path: str, *, token: str | None = None, cookies: dict[str, str] | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, cookies=cookies, timeout=httpx.Timeout(60.0))
        self.path = path
        self.events: list[tuple[float, ServerSentEvent]] = []
        self.status: int | None = None
        self.ended: float | None = None
        self.error: BaseException | None = None
        self.opened = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            with connect_sse(self.http, "GET", self.path) as source:
                self.status = source.response.status_code
                self.opened.set()
                if self.status != 200:
                    return
                for sse in source.iter_sse():
                    self.events.append((time.monotonic(), sse))
            self.ended = time.monotonic()
        except BaseException as exc:  # the server went away mid-stream: kept for the test to see
            self.error = exc
        finally:
            self.opened.set()
            self.done.set()

    def names(self) -> list[str]:
        return [e.event for _, e in self.events]

    def first(self, name: str) -> tuple[float, ServerSentEvent] | None:
        return next(((t, e) for t, e in self.events if e.event == name), None)

    def wait_for(self, name: str, timeout: float) -> tuple[float, ServerSentEvent]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.first(name)
            if found is not None:
                return found
            if self.done.is_set():
                break
            time.sleep(0.02)
        raise AssertionError(f"no {name!r} event within {timeout}s on {self.path}; got {self.names()[-8:]}")

    def close(self) -> None:
        self.http.close()
        self.thread.join(5)
