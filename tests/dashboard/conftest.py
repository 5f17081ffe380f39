"""Fixtures for the dashboard: a live server with a known control token, and processes to target."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from dashboard import create_app
from tests.rig import LiveServer

TOKEN = "test-control-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def logged_in(base: str) -> dict[str, str]:
    """The ``Cookie`` header of a new login session on the server at ``base`` (a browser that
    logged in): a page session opened with it can confirm."""
    r = httpx.post(base + "/dashboard/login", json={"token": TOKEN}, timeout=10)
    r.raise_for_status()
    return {"Cookie": f"dashboard_control={r.cookies['dashboard_control']}"}


def dashboard_server(data_dir: Path, **kwargs: Any) -> LiveServer:
    kwargs.setdefault("interval", 0.25)
    kwargs.setdefault("control_token", TOKEN)
    kwargs.setdefault("rules", [])  # no alert of the busy test machine in the middle of a stream
    return LiveServer(lambda: create_app(data_dir, **kwargs))


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for a module's tests; tests that change settings put them back."""
    with dashboard_server(tmp_path_factory.mktemp("dash"), confirm_timeout=1.5) as srv:
        yield srv


def start_time(pid: int) -> float:
    """As the frames list it (1/100 s)."""
    return round(float(psutil.Process(pid).create_time()), 2)


class Watcher:
    """Reads a stream in a thread, keeping every event; ``stop()`` ends it after the next event."""

    def __init__(self, url: str, *, on_event: Any = None, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.events: list[ServerSentEvent] = []
        self.error: BaseException | None = None
        self._on_event = on_event
        self._headers = headers or {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(20.0)) as client,
                connect_sse(client, "GET", self.url, headers=self._headers) as source,
            ):
                source.response.raise_for_status()
                for sse in source.iter_sse():
                    if sse.event == "message" and not sse.data:
                        continue  # a comment (heartbeat)
                    self.events.append(sse)
                    if self._on_event is not None and self._on_event(sse) is False:
                        return
                    if self._stop.is_set():
                        return
        except BaseException as exc:  # reported to the test through .error
            self.error = exc

    def of(self, event: str) -> list[Any]:
        return [json.loads(e.data) for e in list(self.events) if e.event == event]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class Page:
    """A stand-in for the page's session: answers confirmation requests "yes", "no", or not at all."""

    def __init__(self, base: str, answer: str, *, query: str = "", headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.answer = answer
        self.headers = headers or {}
        self.client_id: str | None = None
        self.token: str | None = None
        self.requests: list[dict[str, Any]] = []
        self.cancels: list[dict[str, Any]] = []
        self.ready = threading.Event()
        url = base + "/dashboard/session/events" + (f"?{query}" if query else "")
        self.watcher = Watcher(url, on_event=self._on, headers=self.headers)

    def _on(self, sse: ServerSentEvent) -> bool:
        data = json.loads(sse.data)
        if sse.event == "session":
            self.client_id, self.token = data["client_id"], data["token"]
            self.ready.set()
        elif sse.event == "request":
            self.requests.append(data)
            if self.answer == "silent":
                return True  # wait for the server's cancel
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": data["id"]}
            if self.answer == "yes":
                reply["result"] = {"confirmed": True}
            else:
                reply["error"] = {"code": -32001, "message": "declined by the test"}
            r = httpx.post(
                self.base + "/dashboard/session/respond",
                json=reply,
                headers={**self.headers, "Authorization": f"Bearer {self.token}"},
            )
            r.raise_for_status()
            return False
        elif sse.event == "cancel":
            self.cancels.append(data)
            return False
        return True

    def wait_ready(self) -> str:
        assert self.ready.wait(10), f"no session event: {self.watcher.error!r}"
        assert self.client_id is not None
        return self.client_id
