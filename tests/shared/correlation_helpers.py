"""Helpers for tests of shared.correlation: an app served in the test's own loop, a scripted page, a trigger."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from shared.server import Server, make_config


@contextlib.asynccontextmanager
async def serving(app: Any, port: int = 0) -> AsyncIterator[str]:
    """``app`` under uvicorn (our ``Server``: streams end first on shutdown) in this event loop."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    server = Server(make_config(app, "127.0.0.1", port, log_level="warning"), app)
    task = asyncio.create_task(server._serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


class Peer:
    """A client of ``/bidi/events`` driven by hand: its events land in a queue."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base: str,
        client_id: str | None = None,
        token: str | None = None,
        *,
        via: str = "header",
    ) -> None:
        self.http, self.base = http, base
        self.url = base + "/bidi/events"
        self.headers: dict[str, str] = {}
        params = {}
        if client_id:
            params["client_id"] = client_id
        if token and via == "header":
            self.headers["Authorization"] = f"Bearer {token}"
        elif token:
            params["token"] = token
        if params:
            self.url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
        self.events: asyncio.Queue[ServerSentEvent] = asyncio.Queue()
        self.opened = asyncio.Event()
        self.ended = asyncio.Event()
        self.status = 0
        self.error: dict[str, Any] = {}
        self.client_id = ""
        self.token = ""
        self._task: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        try:
            async with aconnect_sse(self.http, "GET", self.url, headers=self.headers) as source:
                self.status = source.response.status_code
                if self.status != 200:
                    self.error = json.loads(await source.response.aread())
                    return
                self.opened.set()
                async for sse in source.aiter_sse():
                    if sse.event == "message" and not sse.data:
                        continue  # comment-only block
                    await self.events.put(sse)
        except httpx.TransportError:
            pass  # the connection was cut (a server stopping): the stream has ended
        finally:
            self.opened.set()
            self.ended.set()

    async def connect(self) -> Peer:
        self._task = asyncio.create_task(self._pump())
        await asyncio.wait_for(self.opened.wait(), 5)
        if self.status == 200:
            hello = await self.next("session")
            self.client_id, self.token = hello.json()["client_id"], hello.json()["token"]
        return self

    async def next(self, event: str | None = None, timeout: float = 5.0) -> ServerSentEvent:
        sse = await asyncio.wait_for(self.events.get(), timeout)
        if event is not None:
            assert sse.event == event, f"expected {event!r}, got {sse.event!r}: {sse.data}"
        return sse

    async def answer(self, rid: str, result: Any = None, *, token: str | None = None, **extra: Any) -> httpx.Response:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, **extra}
        if "error" not in extra:
            body["result"] = result
        auth = {"Authorization": f"Bearer {token if token is not None else self.token}"}
        return await self.http.post(self.base + "/bidi/respond", json=body, headers=auth)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def trigger(
    http: httpx.AsyncClient, base: str, client_id: str, params: Any = None, **body: Any
) -> httpx.Response:
    return await http.post(base + "/bidi/trigger", json={"client_id": client_id, "params": params, **body}, timeout=30)
