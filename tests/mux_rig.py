"""A mux client for tests: one ``GET /sse/mux`` read in a task with :mod:`shared.decoder`, the
POSTs that change its topics, and waits on what arrived (issue 15, docs/mux.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from shared.decoder import Decoder, Event

__all__ = ["MuxClient"]


class MuxClient:
    """``async with MuxClient(base_url) as mux:`` opens the stream and reads its first frame."""

    def __init__(self, base_url: str, *, cookies: httpx.Cookies | None = None, headers: dict[str, str] | None = None):
        self.base_url = base_url
        self.client = httpx.AsyncClient(base_url=base_url, cookies=cookies, headers=headers, timeout=15)
        self.events: list[Event] = []
        self.conn = ""
        self.token = ""
        self.max_topics = 0
        self.status = 0
        self.ended = False
        self._task: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()
        self._changed = asyncio.Event()

    async def __aenter__(self) -> MuxClient:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._opened.wait(), 15)
        if self.status != 200:
            raise AssertionError(f"GET /sse/mux answered {self.status}")
        hello = await self.until(lambda: list(self.events))
        assert hello[0].event == "mux", hello
        doc = hello[0].json()
        self.conn, self.token, self.max_topics = doc["conn"], doc["token"], doc["max_topics"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self._task
            self._task = None
        await self.client.aclose()

    async def _read(self) -> None:
        try:
            async with self.client.stream("GET", "/sse/mux", headers={"accept": "text/event-stream"}) as r:
                self.status = r.status_code
                self._opened.set()
                if r.status_code != 200:
                    await r.aread()
                    return
                decoder = Decoder()
                async for chunk in r.aiter_raw():
                    for event in decoder.feed(chunk):
                        self.events.append(event)
                        self._changed.set()
        finally:
            self.ended = True
            self._opened.set()
            self._changed.set()

    # -- changes --------------------------------------------------------------------------------

    async def post(self, body: Any = None, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.token if token is None else token}"}
        headers.update(kwargs.pop("headers", {}))
        return await self.client.post(f"/sse/mux/{kwargs.pop('conn', self.conn)}", json=body, headers=headers, **kwargs)

    async def subscribe(self, k: str, path: str, last_event_id: str | None = None, **extra: Any) -> httpx.Response:
        r = await self.post({"subscribe": [{"k": k, "path": path, "last_event_id": last_event_id, **extra}]})
        assert r.status_code == 200, r.text
        return r

    async def unsubscribe(self, *keys: str) -> httpx.Response:
        r = await self.post({"unsubscribe": list(keys)})
        assert r.status_code == 200, r.text
        return r

    # -- what arrived -----------------------------------------------------------------------------

    def frames(self, k: str) -> list[dict[str, Any]]:
        """The relayed events of topic ``k`` (``{"k", "e", "id", "d"}``), in order."""
        return [doc for doc in self._docs("m") if doc["k"] == k]

    def states(self, k: str) -> list[dict[str, Any]]:
        return [doc for doc in self._docs("t") if doc["k"] == k]

    def _docs(self, event: str) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in self.events if e.event == event]

    async def until(self, check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if self.ended and not check():
                raise AssertionError(f"the mux stream ended before {what or check}; got {self.summary()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or check}; got {self.summary()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    def summary(self) -> str:
        """The topic states, and the last few events cut short (a dashboard frame is 20 kB)."""
        states = [e.data for e in self.events if e.event == "t"]
        last = [f"{e.event}: {e.data[:120]}" for e in self.events[-5:]]
        return f"states {states}; last events {last}"

    async def state(self, k: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        found = await self.until(
            lambda: [s for s in self.states(k) if s["state"] == state], timeout, f"topic {k} {state}"
        )
        return dict(found[-1])

    async def count(self, k: str, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        await self.until(lambda: len(self.frames(k)) >= n, timeout, f"{n} frames of {k}")
        return self.frames(k)
