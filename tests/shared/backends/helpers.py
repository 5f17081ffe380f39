"""Watch a backend's ``listen()`` or a hub subscription from a task, and wait for what arrives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from shared import Hub
from shared.backends import Backend, Entry
from shared.decoder import Decoder


async def _wait(what: str, done: Callable[[], bool], check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if done():
            raise AssertionError(f"{what} ended early")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


class Listening:
    """``backend.listen(topic, after)`` running in a task; ``entries`` grows as batches come."""

    def __init__(self, backend: Backend, topic: str, after: str | None) -> None:
        self.entries: list[Entry] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run(backend, topic, after))

    async def _run(self, backend: Backend, topic: str, after: str | None) -> None:
        try:
            async for batch in backend.listen(topic, after):
                assert batch, "listen() yielded an empty batch"
                self.entries.extend(batch)
        except Exception as exc:
            self.error = exc

    async def until(self, n: int, timeout: float = 10.0) -> list[Entry]:
        def done() -> bool:
            return self.task.done() and len(self.entries) < n

        await _wait(
            f"{n} entries (have {self.entries}, error {self.error!r})", done, lambda: len(self.entries) >= n, timeout
        )
        return self.entries

    async def ended(self, timeout: float = 10.0) -> BaseException | None:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)
        return self.error

    async def __aenter__(self) -> Listening:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class Subscriber:
    """A hub subscription (what one SSE client gets) as ``(event, id, data)`` tuples."""

    def __init__(self, hub: Hub, topic: str, last_id: str | None = None) -> None:
        self.events: list[tuple[str, str | None, str]] = []
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._run(hub, topic, last_id))

    async def _run(self, hub: Hub, topic: str, last_id: str | None) -> None:
        parser = Decoder()
        async with hub.subscribe(topic, last_id) as sub:
            self.ready.set()
            async for chunk in sub:
                self.events.extend((e.event, e.id, e.data) for e in parser.feed(chunk))

    async def until(self, n: int, timeout: float = 10.0) -> list[tuple[str, str | None, str]]:
        def done() -> bool:
            return self.task.done() and len(self.events) < n

        await _wait(f"{n} events (have {self.events[-5:]})", done, lambda: len(self.events) >= n, timeout)
        return self.events

    async def started(self, timeout: float = 10.0) -> Subscriber:
        await asyncio.wait_for(self.ready.wait(), timeout)
        return self

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
