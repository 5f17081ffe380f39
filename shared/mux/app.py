"""The ASGI wrapper: ``GET /sse/mux``, ``POST /sse/mux/{conn}`` and ``/sse/worker.js`` in front
of an app (one app, or the combined server's :class:`shared.mount.Mounts`); all else passes through.

With several workers or instances on one Redis, the POST that changes a connection's topics may
reach another process than the one holding its stream. The connection id starts with its
owner's tag, and the POST is forwarded there with the project's instance-to-instance calls
(:class:`shared.routing.Router`, as ``/bidi/respond`` answers reach the process holding a
browser's session). With the memory backend there is one process and no router.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException

from ..health import HEALTH
from ..limits import ConnectionLimiter, TooManyStreams, WriteWatchdog, client_address
from ..problems import Problem
from ..security import SECURITY_HEADERS, UnsupportedMediaType, bearer, check_content_type, check_origin, tokens_equal
from .conn import MuxConn, TooManyTopics
from .protocol import MAX_BODY, BadRequest, Change, parse_change
from .relay import BlockCache
from .routes import stream_refusal

__all__ = ["Mux", "MuxSettings"]

log = logging.getLogger(__name__)

MUX_PATH = "/sse/mux"
WORKER_PATH = "/sse/worker.js"
WORKER_SCRIPT = Path(__file__).resolve().parent.parent / "static" / "sse-worker.js"
_CONN = re.compile(r"([0-9a-f]{12})\.([A-Za-z0-9_-]{16,64})")


class MuxSettings(SimpleNamespace):
    """Defaults; each may be overridden by keyword (``Mux(app, max_topics=8)``)."""

    max_topics: int = 64  # per connection (429 past it)
    # Per client address, over all its mux connections (a browser holds one per origin; a NAT
    # holds a few browsers). Loopback exempt, as the per-client stream cap (shared.limits).
    max_topics_per_client: int = 256
    max_streams_per_client: int | None = 32  # mux connections per client address
    limit_loopback: bool = False
    heartbeat: float = 15.0
    retry_ms: int = 3000
    shutdown_retry_ms: int = 1000
    write_timeout: float | None = 30.0


class _Refused(Exception):
    def __init__(self, status: int, detail: str, extra: dict[str, Any] | None = None, headers: Any = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra
        self.headers = dict(headers or {})


class Mux:
    """Answers the mux's paths, passes everything else to ``app``.

    ``backend_url`` (``redis://...``): forward changes between processes sharing it.
    ``mounted_apps``/``app`` keep the wrapped app visible to :func:`shared.apps.shutdown_groups`, and
    ``closables`` puts this wrapper in the server's shutdown (its streams end with ``shutdown``).
    """

    def __init__(
        self, app: Any, *, backend_url: str | None = None, worker_script: Path | None = None, **settings: Any
    ) -> None:
        self.app = app
        self.settings = s = MuxSettings(**settings)
        self.backend_url = backend_url
        self.worker_script = worker_script or WORKER_SCRIPT
        self.tag = secrets.token_hex(6)  # this process's part of every connection id
        self.conns: dict[str, MuxConn] = {}
        self.limiter = ConnectionLimiter(s.max_streams_per_client, limit_loopback=s.limit_loopback)
        self.watchdog = WriteWatchdog(s.write_timeout)
        self.cache = BlockCache()  # chunks shared by many topics, parsed once (shared.mux.relay)
        self.closing = False
        self.router: Any = None
        self._hub: Any = None
        self.closables = (self,)
        self.opened = 0  # mux streams ever opened, for /metrics

    def mounted_apps(self) -> list[Any]:
        return [self.app]

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http" and scope.get("path", "").startswith("/sse/"):
            path = scope["path"]
            if path == MUX_PATH:
                await self._open(scope, receive, send)
                return
            if path.startswith(MUX_PATH + "/"):
                await self._post(scope, receive, send, path[len(MUX_PATH) + 1 :])
                return
            if path == WORKER_PATH:
                await self._worker(scope, send)
                return
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _lifespan(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_after(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:
                    await self.start()
                except Exception as exc:
                    log.exception("the mux did not start")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
            elif message["type"] == "lifespan.shutdown.complete":
                await self.close()
            await send(message)

        await self.app(scope, receive, send_after)

    # -- lifetime ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.closing = False
        self.watchdog.start()
        if self.backend_url and self.router is None:
            from ..backends import from_url
            from ..hub import Hub
            from ..routing import Router

            backend = from_url(self.backend_url)
            if backend.spans_processes:
                self._hub = Hub(backend)
                await self._hub.start()
                self.router = Router(self._hub, "mux", instance=f"mux-{self.tag}")
                self.router.handle("change", self._routed_change)
                await self.router.start()

    async def close(self) -> None:
        """End every mux stream with ``shutdown`` (each sub-request is told and awaited)."""
        if self.closing:
            return
        self.closing = True
        conns = list(self.conns.values())
        for conn in conns:
            conn.shutdown()
        # Each stream's finally ends its topics; bounded, so one stuck stream cannot hold the stop.
        tasks = [t for c in conns if (t := c.task) is not None and not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self.watchdog.stop()
        if self.router is not None:
            await self.router.close()
            self.router = None
        if self._hub is not None:
            await self._hub.close()
            self._hub = None

    def mux_stats(self) -> dict[str, int]:
        return {"streams": len(self.conns), "topics": sum(len(c.topics) for c in self.conns.values())}

    # -- GET /sse/mux -------------------------------------------------------------------------

    async def _open(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("method") not in ("GET", "HEAD"):
            await _json(
                send, 405, {"status_code": 405, "detail": f"{MUX_PATH} answers GET"}, [(b"allow", b"GET, HEAD")]
            )
            return
        health = (scope.get("state") or {}).get(HEALTH)
        if self.closing or getattr(health, "draining_since", None) is not None:
            await _json(
                send,
                503,
                {"status_code": 503, "detail": "server is shutting down; reconnect shortly"},
                [(b"retry-after", b"1")],
            )
            return
        try:
            client = self.limiter.acquire(scope)
        except TooManyStreams as exc:
            body = {
                "status_code": 429,
                "detail": str(exc),
                "extra": {"limit": exc.limit, "limit_name": "max_streams_per_client"},
            }
            await _json(send, 429, body, [(b"retry-after", str(exc.retry_after).encode())])
            return
        conn_id = f"{self.tag}.{secrets.token_urlsafe(16)}"
        conn = MuxConn(self.app, scope, conn_id, secrets.token_urlsafe(24), self.settings.max_topics, self.cache)
        self.conns[conn_id] = conn
        self.opened += 1
        self.watchdog.add(conn)
        try:
            s = self.settings
            await conn.serve(
                receive, send, heartbeat=s.heartbeat, retry_ms=s.retry_ms, shutdown_retry_ms=s.shutdown_retry_ms
            )
        finally:
            self.watchdog.discard(conn)
            self.conns.pop(conn_id, None)
            self.limiter.release(client)

    # -- POST /sse/mux/{conn} -----------------------------------------------------------------

    async def _post(self, scope: dict[str, Any], receive: Any, send: Any, conn_id: str) -> None:
        try:
            if scope.get("method") != "POST":
                raise _Refused(405, f"{MUX_PATH}/{{conn}} answers POST", headers={"allow": "POST"})
            try:
                check_origin(ASGIConnection(scope))  # type: ignore[arg-type]
                check_content_type(scope)  # type: ignore[arg-type]
            except (PermissionDeniedException, UnsupportedMediaType) as exc:
                raise _Refused(exc.status_code, exc.detail) from None
            token = _bearer(scope)
            body = await _read_body(receive)
            try:
                parse_change(body)  # 400 here, before any forwarding
            except BadRequest as exc:
                raise _Refused(400, exc.detail, {"field": exc.field}) from None
            match = _CONN.fullmatch(conn_id)
            if match is None:
                raise _Refused(404, "unknown mux connection")
            cookie = _header(scope, b"cookie")
            if match.group(1) == self.tag or self.router is None:
                result = await self._change(conn_id, token, body, cookie)
            else:
                result = await self._forward(match.group(1), conn_id, token, body, cookie)
        except _Refused as exc:
            doc: dict[str, Any] = {"status_code": exc.status, "detail": exc.detail}
            if exc.extra:
                doc["extra"] = exc.extra
            extra = [(k.lower().encode(), str(v).encode()) for k, v in exc.headers.items()]
            await _json(send, exc.status, doc, extra)
            return
        await _json(send, 200, result)

    async def _change(self, conn_id: str, token: str, body: bytes, cookie: bytes | None) -> dict[str, Any]:
        """Apply a change to a connection of this process (the token checked here, its owner)."""
        conn = self.conns.get(conn_id)
        if conn is None or conn.ended or conn.closing:
            raise _Refused(404, "unknown mux connection")
        if not tokens_equal(token, conn.token):
            raise _Refused(
                401,
                "bad mux token: send the 'token' of the mux event as Authorization: Bearer <token>",
                headers={"www-authenticate": "Bearer"},
            )
        try:
            change = parse_change(body)
        except BadRequest as exc:
            raise _Refused(400, exc.detail, {"field": exc.field}) from None
        refusals = {s.k: why for s in change.subscribe if (why := stream_refusal(self.app, s.path)) is not None}
        # One change at a time per connection: two POSTs replacing one key at once would each
        # start a topic, and the one overwritten in the table would never be stopped.
        async with conn.lock:
            if conn.ended or conn.closing:
                raise _Refused(404, "unknown mux connection")
            try:
                self._check_caps(conn, change)
            except TooManyTopics as exc:
                raise _Refused(
                    429, str(exc), {"limit": exc.limit, "limit_name": exc.limit_name}, {"retry-after": "5"}
                ) from None
            return await conn.apply(change, refusals, cookie)

    def _check_caps(self, conn: MuxConn, change: Change) -> None:
        s = self.settings
        after = conn.would_have(change)
        if after > s.max_topics:
            raise TooManyTopics(
                f"this mux connection would hold {after} topics, the limit is {s.max_topics}; unsubscribe some first",
                s.max_topics,
                "max_topics",
            )
        client = client_address(conn.scope, limit_loopback=s.limit_loopback)
        if client is None:
            return
        total = after + sum(
            len(c.topics)
            for c in self.conns.values()
            if c is not conn and client_address(c.scope, limit_loopback=s.limit_loopback) == client
        )
        if total > s.max_topics_per_client:
            raise TooManyTopics(
                f"the mux connections of {client} would hold {total} topics, the limit is {s.max_topics_per_client} "
                "per client address",
                s.max_topics_per_client,
                "max_topics_per_client",
            )

    async def _forward(self, tag: str, conn_id: str, token: str, body: bytes, cookie: bytes | None) -> dict[str, Any]:
        owner = f"mux-{tag}"
        if owner not in self.router.peers():
            raise _Refused(404, "unknown mux connection")  # its process is gone: reconnect the mux
        try:
            result: dict[str, Any] = await self.router.call(
                owner,
                "change",
                {
                    "conn": conn_id,
                    "token": token,
                    "body": body.decode(),
                    "cookie": None if cookie is None else cookie.decode("latin-1"),
                },
            )
        except Problem as exc:  # the owner's refusal, carried back by the router with its status
            raise _Refused(exc.status_code, exc.detail, exc.extra, exc.headers) from None
        return result

    async def _routed_change(self, params: Any) -> Any:
        try:
            cookie = params.get("cookie")
            return await self._change(
                str(params["conn"]),
                str(params["token"]),
                str(params["body"]).encode(),
                None if cookie is None else str(cookie).encode("latin-1"),
            )
        except _Refused as exc:
            raise Problem(exc.detail, status_code=exc.status, extra=exc.extra, headers=exc.headers) from None

    # -- GET /sse/worker.js --------------------------------------------------------------------

    async def _worker(self, scope: dict[str, Any], send: Any) -> None:
        if scope.get("method") not in ("GET", "HEAD"):
            await _json(
                send, 405, {"status_code": 405, "detail": f"{WORKER_PATH} answers GET"}, [(b"allow", b"GET, HEAD")]
            )
            return
        try:
            script = await asyncio.to_thread(self.worker_script.read_bytes)
        except OSError:
            await _json(send, 404, {"status_code": 404, "detail": "no shared worker script on this server"})
            return
        headers = [
            (b"content-type", b"text/javascript; charset=utf-8"),
            (b"content-length", str(len(script)).encode()),
            (b"cache-control", b"no-cache"),
            *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else script})


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _bearer(scope: dict[str, Any]) -> str:
    token = bearer(_header(scope, b"authorization"))
    if token is not None:
        return token
    raise _Refused(
        401,
        "a mux change needs 'Authorization: Bearer <token>', the token of the stream's first (mux) event",
        headers={"www-authenticate": "Bearer"},
    )


async def _read_body(receive: Any) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Refused(400, "body: the request ended before its body")
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            raise _Refused(400, f"body: is over {MAX_BODY} bytes", {"field": "body"})
        if not message.get("more_body", False):
            return bytes(body)


async def _json(send: Any, status: int, doc: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(doc).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        *(extra or []),
    ]
    with contextlib.suppress(OSError):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
