"""HEAD answered as GET without the body, for every route (pages and event streams alike).

RFC 9110 9.3.2: a server answers HEAD with the headers it would send for GET. Litestar routes a
method only where a handler declares it, so ``HEAD /chat/`` or ``HEAD /basics/events`` was 405,
and monitors, link checkers and ``curl -I`` saw an error where the page is fine. This wrapper runs
the GET handler, passes its status and headers on, and ends the response there: for a stream that
means right after its headers, with the app told the client has gone (so its subscription is
released at once, as for any other disconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HeadAsGet"]

# How long a handler may go on after its HEAD answer was sent before it is cancelled: an event
# stream sees the disconnect at its next wake-up, a page has long returned.
_GRACE = 1.0


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app  # ``app`` by name: shared.apps.shutdown_groups() looks through wrappers by it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return
        # A copy: the server keeps its own scope, and must still know this was HEAD.
        get_scope = dict(scope, method="GET")
        answered = asyncio.Event()

        async def send_head(message: Message) -> None:
            if answered.is_set():
                return
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                answered.set()

        async def receive_until_answered() -> Any:
            if answered.is_set():
                return {"type": "http.disconnect"}
            waiter = asyncio.ensure_future(receive())
            done = asyncio.ensure_future(answered.wait())
            try:
                await asyncio.wait({waiter, done}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                done.cancel()
            if waiter.done():
                return waiter.result()
            waiter.cancel()
            return {"type": "http.disconnect"}

        task = asyncio.ensure_future(self.app(get_scope, receive_until_answered, send_head))  # type: ignore[arg-type]
        sent = asyncio.ensure_future(answered.wait())
        try:
            await asyncio.wait({task, sent}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), _GRACE)
        finally:
            sent.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not task.cancelled() and (exc := task.exception()) is not None:
            raise exc
