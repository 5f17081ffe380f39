"""One topic of a mux connection: an internal ``GET <path>`` into the wrapped app, relayed.

The sub-request is the app's own endpoint run as if the browser had asked for it (same cookie,
host, origin and client address as the mux GET, plus the topic's ``Last-Event-ID`` and
``Authorization``), so authorization, snapshots, ``reset`` and ephemeral events are the app's
own; nothing here knows what a topic means. Its response is decoded with the WHATWG parser
(:mod:`shared.decoder`) and each event re-sent on the mux stream tagged with the topic's key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..limits import MUX_SCOPE_KEY
from .protocol import Subscribe, split_topic, state_frame
from .relay import BlockCache, Relay

__all__ = ["MUX_SCOPE_KEY", "Topic", "sub_scope"]

log = logging.getLogger(__name__)

# An error answer's body is kept up to this many bytes for the ``t`` event.
_MAX_ERROR_BODY = 16 * 1024
# How long an inner stream may take to end after its http.disconnect before it is cancelled.
_END_GRACE = 2.0

# The mux GET's headers a topic's request carries: who is asking (cookie), to whom (host), from
# which page (origin, user-agent) and, behind a proxy, for which client (x-forwarded-*).
_FORWARDED = frozenset({b"cookie", b"host", b"origin", b"user-agent", b"accept-language", b"forwarded", b"x-real-ip"})

Emit = Callable[["Topic", bytes], Awaitable[None]]


def sub_scope(scope: dict[str, Any], sub: Subscribe, conn: str, cookie: bytes | None = None) -> dict[str, Any]:
    """The ASGI scope of ``sub``'s internal GET, made from the mux GET's ``scope``.

    ``cookie``: the ``Cookie`` of the POST that subscribed, which wins over the GET's: the page
    may have logged in (chat session, exec login) after the shared connection was opened.
    """
    path, query = split_topic(sub.path)
    headers = [
        (name, value)
        for name, value in scope.get("headers", ())
        if (name in _FORWARDED or name.startswith(b"x-forwarded-")) and not (cookie is not None and name == b"cookie")
    ]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    headers += [(b"accept", b"text/event-stream"), (b"cache-control", b"no-cache")]
    if sub.last_event_id is not None:
        headers.append((b"last-event-id", sub.last_event_id.encode()))
    if sub.authorization is not None:
        headers.append((b"authorization", sub.authorization.encode()))
    raw_path = sub.path.split("?", 1)[0]
    return {
        "type": "http",
        "asgi": scope.get("asgi", {"version": "3.0", "spec_version": "2.3"}),
        "http_version": scope.get("http_version", "1.1"),
        "method": "GET",
        "scheme": scope.get("scheme", "http"),
        "path": path,
        "raw_path": raw_path.encode("ascii", "replace"),
        "query_string": query.encode("ascii", "replace"),
        "root_path": scope.get("root_path", ""),
        "headers": headers,
        "client": scope.get("client"),
        "server": scope.get("server"),
        # A copy of the lifespan state (each request gets its own, as uvicorn does): the app
        # keeps per-request things in it.
        "state": dict(scope.get("state") or {}),
        "extensions": {**(scope.get("extensions") or {}), MUX_SCOPE_KEY: {"conn": conn}},
    }


def _error_body(raw: bytes, status: int) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return {"status_code": status, "detail": raw[:500].decode(errors="replace")}


def _content_type(headers: Any) -> str:
    for name, value in headers or ():
        if name.lower() == b"content-type":
            return bytes(value).decode("latin-1").split(";", 1)[0].strip().lower()
    return ""


class Topic:
    """A subscribed key and its running sub-request; ``current`` is False once unsubscribed or
    replaced, and from then on its frames are dropped (a key's frames belong to one run)."""

    __slots__ = ("cache", "current", "gone", "key", "state", "sub", "task")

    def __init__(self, sub: Subscribe, cache: BlockCache | None = None) -> None:
        self.key = sub.k
        self.sub = sub
        self.cache = cache or BlockCache()
        self.current = True
        self.state = "starting"  # then "open", "error" or "closed"
        self.gone = asyncio.Event()  # set: the sub-request is told its client went away
        self.task: asyncio.Task[None] | None = None

    def start(self, app: Any, scope: dict[str, Any], emit: Emit, closing: Callable[[], bool]) -> None:
        self.task = asyncio.create_task(self._run(app, scope, emit, closing), name=f"mux-topic-{self.key}")

    async def stop(self) -> None:
        """Drop it: the sub-request gets ``http.disconnect`` and is awaited (cancelled if it
        does not end within a grace period), so its subscriptions are released before this returns."""
        self.current = False
        self.gone.set()
        task = self.task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=_END_GRACE)
        if not done:
            log.warning("mux topic %s did not end %.0fs after its disconnect; cancelling it", self.key, _END_GRACE)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self, app: Any, scope: dict[str, Any], emit: Emit, closing: Callable[[], bool]) -> None:
        key = self.key
        relay = Relay(key, self.sub.last_event_id, self.cache)
        error = bytearray()
        status = 0
        asked = False

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = int(message["status"])
                ctype = _content_type(message.get("headers"))
                if status == 200 and ctype == "text/event-stream":
                    self.state = "open"
                    await emit(self, state_frame(key, "open"))
                elif status == 200:
                    # Resolved as a stream route but answered something else: never relayed.
                    await self._refuse(emit, 400, f"{self.sub.path} is not an event stream (it answers {ctype!r})")
            elif kind == "http.response.body":
                body = message.get("body", b"")
                if self.state == "open":
                    # Comments (heartbeats) and retry: fields never become frames.
                    frames = relay.frames(body) if body else b""
                    if frames:
                        await emit(self, frames)
                elif self.state == "starting":
                    if len(error) < _MAX_ERROR_BODY:
                        error.extend(body[: _MAX_ERROR_BODY - len(error)])
                    if not message.get("more_body", False):
                        self.state = "error"
                        await emit(self, state_frame(key, "error", status, _error_body(bytes(error), status)))

        try:
            await app(scope, receive, send)
        except Exception:
            log.exception("mux topic %s (%s) failed", key, self.sub.path)
            if self.state == "starting":
                await self._refuse(emit, 500, "the stream failed before it started")
        if self.state == "starting" and self.current:  # ended without a body (never seen from our apps)
            await self._refuse(emit, status or 500, f"{self.sub.path} answered {status} without a body")
        if self.state == "open" and self.current and not closing():
            self.state = "closed"
            await emit(self, state_frame(key, "closed"))

    async def _refuse(self, emit: Emit, status: int, detail: str) -> None:
        self.state = "error"
        self.gone.set()
        await emit(self, state_frame(self.key, "error", status, {"status_code": status, "detail": detail}))
