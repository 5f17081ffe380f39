"""Running an app under uvicorn so that open SSE streams end promptly on shutdown.

uvicorn waits for streaming responses to finish before it runs the lifespan shutdown (and by
default waits forever), so a hub closed from ``on_shutdown`` would never be reached. Our
``Server`` closes the app's hubs first, then lets uvicorn shut down as usual, with a short
graceful timeout as a backstop.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import errno
import gc
import importlib
import ipaddress
import json
import logging
import os
import pickle
import signal
import socket
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol
from urllib.parse import urlsplit

import uvicorn

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _BaseHttpProtocol

    _HTTPTOOLS = True
except ImportError:  # pragma: no cover - without httptools, uvicorn uses h11
    from uvicorn.protocols.http.h11_impl import H11Protocol as _BaseHttpProtocol  # type: ignore[assignment]

    _HTTPTOOLS = False  # h11 bounds the head itself (h11_max_incomplete_event_size), not its time

from .datadir import DataDirError, usable_dir
from .head import HeadAsGet
from .health import HEALTH, Health
from .hosts import HostCheck
from .hosts import allowed_hosts as hosts_allowed
from .limits import ABORT_CONNECTION
from .metrics import METRICS, METRICS_TOKEN_ENV, Metrics
from .metrics_listener import MetricsListener, parse_listen
from .security import redact_access_log

__all__ = [
    "ALLOWED_HOSTS_ENV",
    "BACKEND_ENV",
    "SEND_BUFFER",
    "Server",
    "app_hubs",
    "base_parser",
    "check_bind",
    "check_port",
    "check_workers",
    "make_config",
    "run_from_args",
    "serve",
    "serve_build",
    "tune_gc",
    "with_mux",
    "worker_app",
]

# The backend URL when --backend is not given, e.g. redis://127.0.0.1:6379/0.
BACKEND_ENV = "SSE_BACKEND"
# --allowed-hosts when not given.
ALLOWED_HOSTS_ENV = "SSE_ALLOWED_HOSTS"
DRAIN_ENV = "SSE_DRAIN_SECONDS"
METRICS_LISTEN_ENV = "SSE_METRICS_LISTEN"
# How a worker process learns which app to build, and with which arguments (see serve_build).
_BUILD_ENV = "SSE_WORKER_BUILD"
_ARGS_ENV = "SSE_WORKER_ARGS"

# Kernel send buffer per connection. Linux otherwise grows it up to 4 MiB for a client that
# stopped reading: a thousand such clients pin gigabytes of kernel memory, and a stuck write
# (shared.limits) is only noticed once 4 MiB are queued. 256 KiB (the kernel doubles it) is
# still plenty for event streams and pages.
SEND_BUFFER = 256 * 1024

log = logging.getLogger(__name__)


class Closable(Protocol):
    async def close(self) -> None: ...


def app_hubs(app: Any) -> list[list[Closable]]:
    """What each app declares in ``app.state.sse_hubs`` (hubs, and things with ``close()`` that
    must go first: routers, correlators), in the order to close them, one group per app.

    Sees through whatever wraps the apps, at any depth: ASGI middlewares (``.app``, as uvicorn's
    proxy-headers middleware in a worker) and :class:`shared.mount.Mounts` (``mounted_apps()``,
    the combined server). An app found nowhere here would keep its streams open at shutdown
    until uvicorn's graceful timeout cancels them, so this walk is the whole of the guarantee.
    """
    groups: list[list[Closable]] = []
    seen: set[int] = set()

    def walk(node: Any, depth: int) -> None:
        if node is None or id(node) in seen or depth > 20:
            return
        seen.add(id(node))
        mounted = getattr(node, "mounted_apps", None)
        if callable(mounted):
            for child in mounted():
                walk(child, depth + 1)
        state = getattr(node, "state", None)
        if state is not None and getattr(state, "sse_hubs", None):
            groups.append(list(state.sse_hubs))
        elif not callable(mounted):
            walk(getattr(node, "app", None), depth + 1)

    walk(app, 0)
    return groups


async def _close_in_order(items: list[Closable]) -> None:
    for item in items:
        try:
            await item.close()
        except Exception:
            log.exception("closing %r failed", item)


class Server(uvicorn.Server):
    """``uvicorn.Server`` that ends the app's SSE streams before uvicorn waits for them.

    It also offers the apps a way to drop a connection at once (``ABORT_CONNECTION`` in the
    request's ``scope["state"]``), used to end streams to clients that stopped reading, and
    caps each connection's kernel send buffer at ``send_buffer`` bytes (``None``: the kernel's
    autotuning).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        app: Any,
        *,
        send_buffer: int | None = SEND_BUFFER,
        tune_gc: bool = False,
        drain_seconds: float = 0.0,
        metrics_token: str | None = None,
        metrics_listen: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(config)
        self._app = app
        # On a stop: not ready and no new streams at once, open streams ended this much later.
        self.drain_seconds = drain_seconds
        # A bound method, not a lambda: with --workers the Server is pickled into each worker.
        self.health = Health(self._hub_items)
        self.metrics_token = metrics_token
        self.metrics: Metrics | None = None  # made in startup: its registry does not pickle (--workers)
        self.metrics_listen = metrics_listen  # (host, port): /metrics off the public port too
        self._metrics_listener: MetricsListener | None = None
        self.send_buffer = send_buffer
        # Process-wide (see tune_gc): for a server that owns its process, not one run in a test.
        self.tune_gc = tune_gc
        self.loop: asyncio.AbstractEventLoop | None = None  # the serving loop, once started
        # client (host, port) -> connection, rebuilt on a miss: the watchdog may drop a thousand
        # connections in one sweep, and a scan of every connection for each would be quadratic.
        # Made in startup: with --workers the Server is pickled into each worker, a weakref not.
        self._by_client: weakref.WeakValueDictionary[Any, Any] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self._by_client = weakref.WeakValueDictionary()
        # uvicorn copies the lifespan state into every request's scope["state"].
        self.lifespan.state[ABORT_CONNECTION] = self.abort_connection
        self.lifespan.state[HEALTH] = self.health
        self.metrics = Metrics(self._hub_items, self.metrics_token)
        self.lifespan.state[METRICS] = self.metrics
        await super().startup(sockets)
        if self.metrics_listen is not None and not self.should_exit:
            self._metrics_listener = MetricsListener(self.metrics, *self.metrics_listen)
            try:
                await self._metrics_listener.start()
            except OSError as exc:  # checked before start-up (check_port); taken in between
                log.error("cannot serve metrics at %s:%d: %s", *self.metrics_listen, exc.strerror)
                self._metrics_listener = None
                self.should_exit = True
        if self.tune_gc:
            tune_gc()
        if self.send_buffer is not None:
            # Accepted connections inherit the listening socket's buffer size (and lose autotuning).
            for server in getattr(self, "servers", []):
                for sock in server.sockets or ():
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)

    def abort_connection(self, scope: Any) -> bool:
        """Reset the connection that carries ``scope`` (matched by client address and port).

        ``transport.close()`` would wait for the buffered bytes to be sent, which never happens
        for a client that stopped reading; ``abort()`` drops them, and uvicorn sees the connection
        lost, so a send waiting on flow control returns and the app's disconnect handling runs.
        """
        client = scope.get("client") if isinstance(scope, dict) else None
        if not client:
            return False
        client = tuple(client)
        connections = self.server_state.connections
        conn = self._by_client.get(client) if self._by_client is not None else None
        if conn is None or conn not in connections or getattr(conn, "client", None) != client:
            self._by_client = weakref.WeakValueDictionary(
                (getattr(c, "client", None), c) for c in connections if getattr(c, "client", None)
            )
            conn = self._by_client.get(client)
        transport = getattr(conn, "transport", None)
        if transport is None:
            return False
        transport.abort()
        return True

    def _hub_items(self) -> list[Closable]:
        return [item for group in app_hubs(self.served_app()) for item in group]

    def served_app(self) -> Any:
        """The app this server runs, with what :func:`make_config` put around it (the mux, whose
        streams must end at shutdown too), or (in a worker) the one uvicorn built, with uvicorn's
        middlewares around it (:func:`app_hubs` sees through them)."""
        configured = getattr(self.config, "app", None)
        if configured is not None and not isinstance(configured, str):
            return configured
        return self._app if self._app is not None else getattr(self.config, "loaded_app", None)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Not ready first (/readyz 503, new streams 503), still serving everything open...
        self.health.drain()
        if self.drain_seconds > 0:
            log.info("draining for %.1f s: not ready, refusing new streams, open ones carry on", self.drain_seconds)
            await asyncio.sleep(self.drain_seconds)
        # ...then the streams end with `shutdown` and a retry hint. Apps side by side; within an
        # app, in the order it listed (a router says goodbye through its hub, so it goes first).
        await asyncio.gather(*(_close_in_order(group) for group in app_hubs(self.served_app())))
        await super().shutdown(sockets)
        if self._metrics_listener is not None:  # last: a scrape during the drain still answers
            await self._metrics_listener.close()


# Container allocations between two young collections (CPython's default: 700).
GC_THRESHOLD = 10_000


def tune_gc() -> None:
    """Garbage collection for a long-running server process, called once the app has started.

    A streaming server keeps thousands of objects per open connection for as long as it is open,
    and allocates short-lived ones (futures, messages) for every event it delivers. With
    CPython's defaults, collections ran every 700 allocations and every few seconds a full one
    walked every object of every connection: measured in the bench (1,000 streams, 200 events),
    a sixth of the server's CPU and pauses of ~30 ms, which every subscriber waiting for that
    event sees as latency. Everything built so far (modules, the app, its routes) is frozen out
    of the collector's sight, and young collections run 14 times less often.
    """
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, gen1, gen2)


class _HeadWithBody:
    """A transport that holds a response's head back until the first write of its body.

    uvicorn writes the status line and headers, then each body part, each in its own
    ``transport.write``, and uvloop sends each at once: two system calls (and two wake-ups of
    the client) for every small response. Held back, the head leaves with the body in one
    write, or at the end of this turn of the event loop if no body comes by then.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(b"HTTP/1.1 "):  # uvicorn writes a whole head at once
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def writelines(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))  # through write(): never past a held head

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():  # (the connection was lost meanwhile)
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def direct_transport(self) -> asyncio.Transport | None:
        """The wrapped transport, for direct writes of a response's body (``shared.fastpath``),
        once no head is held back."""
        return self._transport if self._held is None else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# A request head (request line and headers) must fit in this many bytes (one more: 431), and
# arrive within this many seconds of the connection opening or of the previous response ending
# (else the connection is closed). uvicorn with httptools bounds neither: twenty unfinished 8 MiB
# heads took a server from 72 to 255 MiB, and slowloris connections stayed open for good.
MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT = 10.0


class HeadWithBodyProtocol(_BaseHttpProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools when installed, as ``http="auto"`` picks), writing
    each response's head together with its body (see :class:`_HeadWithBody`), with the request
    head bounded in size (:data:`MAX_HEAD_BYTES`) and in time (:data:`HEAD_TIMEOUT`)."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout = HEAD_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadWithBody(transport, self.loop))  # type: ignore[arg-type]
        self._head_bytes: int | None = None  # None: not inside a request head
        self._head_timer: asyncio.TimerHandle | None = None
        if _HTTPTOOLS:
            self._await_head()

    def _await_head(self) -> None:
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _head_done(self) -> None:
        self._head_bytes = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._head_bytes is not None and not self.transport.is_closing():
            if self._head_bytes:
                self._refuse(408, f"the request head did not arrive within {self.head_timeout:g} s")
            else:
                self.transport.close()  # an idle connection that never asked anything

    def _refuse(self, status: int, detail: str) -> None:
        body = json.dumps({"status_code": status, "detail": detail}).encode()
        reason = {408: "Request Timeout", 431: "Request Header Fields Too Large"}[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()
        self._head_bytes = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing: bytes of a head that completed in this chunk (and the body
        # after it) do not count; a head still unfinished holds at most the limit plus a chunk.
        if self._head_bytes is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
                self._refuse(431, f"the request head is over {self.max_head_bytes // 1024} KiB")

    def on_headers_complete(self) -> None:
        self._head_done()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(getattr(self, "pipeline", None))
        super().on_response_complete()
        if _HTTPTOOLS and not pipelined and not self.transport.is_closing():
            self._await_head()  # the next request on this keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_done()
        super().connection_lost(exc)


def make_config(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    allowed_hosts: Sequence[str] = (),
    head_timeout: float = HEAD_TIMEOUT,
    max_head_bytes: int = MAX_HEAD_BYTES,
    mux: bool = True,
    backend_url: str | None = None,
    **kwargs: Any,
) -> uvicorn.Config:
    """uvicorn's settings for ``app`` on ``host:port``; ``app`` is put behind the Host allowlist
    (:class:`shared.hosts.HostCheck`: the bind address, loopback names, and ``allowed_hosts``)
    and, unless ``mux=False``, behind the multiplexed stream (:class:`shared.mux.Mux`, which
    forwards changes between processes on ``backend_url`` if that is a shared backend).
    An app given as an import string is wrapped where it is built (:func:`worker_app`).
    ``head_timeout`` and ``max_head_bytes`` bound each request head (:class:`HeadWithBodyProtocol`)."""
    kwargs.setdefault("timeout_graceful_shutdown", 2)
    kwargs.setdefault("log_level", "info")
    # Off unless asked (--proxy-headers): trusted, X-Forwarded-For from any local process would
    # name the client, and per-client caps count by that name. Also a middleware per request less.
    kwargs.setdefault("proxy_headers", False)
    if kwargs.get("http", "auto") == "auto":
        kwargs["http"] = HeadWithBodyProtocol
        if (head_timeout, max_head_bytes) != (HEAD_TIMEOUT, MAX_HEAD_BYTES):
            # (Only then a class made here: with --workers the config is pickled, and it is not.)
            kwargs["http"] = type(
                "HeadWithBodyProtocol",
                (HeadWithBodyProtocol,),
                {"head_timeout": head_timeout, "max_head_bytes": max_head_bytes},
            )
    if kwargs["log_level"] in ("warning", "error", "critical"):
        # Access lines are INFO: not shown at this level, but uvicorn still formats their
        # arguments for every response unless the access log is off.
        kwargs.setdefault("access_log", False)
    if not isinstance(app, str):
        if mux:
            app = with_mux(app, backend_url)
        app = HostCheck(HeadAsGet(app), hosts_allowed(host, allowed_hosts), proxy_headers=kwargs["proxy_headers"])
    # Streams are long-lived; uvicorn's keep-alive timeout only applies between requests.
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", **kwargs)
    # After Config: it (re)configures uvicorn's loggers. Keeps ?token= values out of access logs.
    redact_access_log()
    return config


def with_mux(app: Any, backend_url: str | None = None) -> Any:
    """``app`` behind :class:`shared.mux.Mux` (once: an app already behind one is returned as is)."""
    from .mux import Mux

    return app if isinstance(app, Mux) else Mux(app, backend_url=backend_url)


def serve(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    drain_seconds: float = 0.0,
    metrics_token: str | None = None,
    metrics_listen: tuple[str, int] | None = None,
    **kwargs: Any,
) -> None:
    """Blocking: serve ``app`` until Ctrl-C / SIGTERM, closing SSE streams first on the way out
    (after ``drain_seconds`` of being not ready, see :mod:`shared.health`). ``metrics_token``
    turns ``/metrics`` on (:mod:`shared.metrics`); ``metrics_listen`` serves it, without a token,
    on a separate address (:mod:`shared.metrics_listener`)."""
    config = make_config(app, host, port, **kwargs)
    Server(
        config,
        app,
        tune_gc=True,
        drain_seconds=drain_seconds,
        metrics_token=metrics_token,
        metrics_listen=metrics_listen,
    ).run()


def check_bind(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback address unless asked explicitly: these apps are local tools first."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise SystemExit(
            f"refusing to listen on {host!r}: it is not a loopback address. "
            "Pass --allow-remote if you really mean to expose this server (and put TLS in front)."
        )


def check_port(host: str, port: int) -> None:
    """Exit with one line (status 2) if ``host:port`` cannot be listened on, e.g. a port in use.

    Called before anything is printed: uvicorn finds out only after start-up, by which time the
    apps have printed fresh tokens and login links for a server that then exits with Errno 98.
    Binds as uvicorn (asyncio's ``create_server``) does, with ``SO_REUSEADDR``, every address
    ``host`` resolves to, then lets go; a port taken in between still fails in uvicorn as before.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        _refuse(f"cannot listen on {host!r}: {exc.strerror}")
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio does
            try:
                sock.bind(address)
            except OSError as exc:
                where = f"[{address[0]}]:{port}" if family == socket.AF_INET6 else f"{address[0]}:{port}"
                if exc.errno == errno.EADDRINUSE:
                    _refuse(f"port {port} is in use ({where}: another server listens there): pick another with --port")
                _refuse(f"cannot listen on {where} ({exc.strerror}): pick another --port or --host")


def _refuse(line: str) -> NoReturn:
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(2)  # argparse's status for a bad argument


def _drain_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 <= seconds <= 600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 600 seconds, not {value}")
    return seconds


def _metrics_listen(value: str) -> tuple[str, int]:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _data_dir(value: str) -> Path:
    try:
        return usable_dir(value)
    except DataDirError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None  # one line, exit 2


def base_parser(prog: str, description: str, default_port: int = 8000) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=default_port, help=f"port (default: {default_port})")
    parser.add_argument(
        "--data-dir",
        type=_data_dir,
        default=".data",  # a string, so argparse checks it with _data_dir too
        help="where SQLite files and keys go, readable by this user only (default: ./.data)",
    )
    parser.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    parser.add_argument(
        "--allowed-hosts",
        default=os.environ.get(ALLOWED_HOSTS_ENV, ""),
        help="more names the server answers to (Host header), comma-separated: 'chat.example.com', "
        "'.example.com' (and subdomains) or '*' (any). Loopback names, the --host address and, bound to "
        f"0.0.0.0, the machine's addresses are always allowed; others get 400 (default: ${ALLOWED_HOSTS_ENV})",
    )
    parser.add_argument(
        "--backend",
        default=os.environ.get(BACKEND_ENV) or "memory://",
        help=f"where topics live: memory:// (default, one process) or redis://host:port/db (default: ${BACKEND_ENV})",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (default: 1); more than one needs --backend redis://"
    )
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="behind a reverse proxy: take the client address from X-Forwarded-For (and the scheme from "
        "X-Forwarded-Proto) when the connection comes from --forwarded-allow-ips",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        help="with --proxy-headers: the proxy addresses to trust, comma-separated (default: 127.0.0.1)",
    )
    parser.add_argument(
        "--drain-seconds",
        type=_drain_seconds,
        default=os.environ.get(DRAIN_ENV) or "0",
        help="on SIGTERM, stay up this long not ready (/readyz 503, new streams 503) before ending the "
        f"open streams, so a load balancer moves clients away first (default: ${DRAIN_ENV}, else 0)",
    )
    parser.add_argument(
        "--metrics-token",
        default=os.environ.get(METRICS_TOKEN_ENV) or None,
        help=f"serve Prometheus metrics at /metrics to 'Authorization: Bearer <this>' (default: ${METRICS_TOKEN_ENV}; "
        "unset: /metrics is off)",
    )
    parser.add_argument(
        "--metrics-listen",
        type=_metrics_listen,
        default=os.environ.get(METRICS_LISTEN_ENV) or None,
        metavar="[HOST:]PORT",
        help="also serve /metrics, without a token, on this address only (host default 127.0.0.1; with "
        f"--workers N, worker i listens on PORT+i) (default: ${METRICS_LISTEN_ENV}, else off)",
    )
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def proxy_options(args: argparse.Namespace) -> dict[str, Any]:
    """The uvicorn settings of ``--proxy-headers`` / ``--forwarded-allow-ips``."""
    if not getattr(args, "proxy_headers", False):
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": args.forwarded_allow_ips}


def extra_hosts(args: argparse.Namespace) -> list[str]:
    """``--allowed-hosts`` as a list."""
    return [h.strip() for h in (getattr(args, "allowed_hosts", "") or "").split(",") if h.strip()]


def check_workers(workers: int, backend: str) -> None:
    """Refuse several workers on a backend that lives inside one process."""
    if workers < 1:
        raise SystemExit(f"--workers must be at least 1, not {workers}")
    if workers > 1 and urlsplit(backend or "memory://").scheme == "memory":
        raise SystemExit(
            f"refusing --workers {workers} with the memory backend: it keeps every topic, presence list and "
            "pending request inside one process, so clients of different workers would not see each other's "
            "events and a reconnect to another worker would lose its place. Run one worker, or share a Redis: "
            "--backend redis://127.0.0.1:6379/0 (or set SSE_BACKEND)."
        )


def run_from_args(app: Any, args: argparse.Namespace, extra: Sequence[str] = ()) -> None:
    """Serve an already built app in this process (one worker)."""
    check_bind(args.host, args.allow_remote)
    check_workers(getattr(args, "workers", 1), getattr(args, "backend", "memory://"))
    if getattr(args, "workers", 1) > 1:
        raise SystemExit("this app cannot run several workers yet")
    check_port(args.host, args.port)  # before ``extra`` (tokens, login links) is printed
    listen = check_metrics_listen(args, 1)
    for line in extra:
        print(line, flush=True)
    try:
        serve(
            app,
            args.host,
            args.port,
            log_level=args.log_level,
            allowed_hosts=extra_hosts(args),
            drain_seconds=getattr(args, "drain_seconds", 0.0),
            metrics_token=getattr(args, "metrics_token", None),
            metrics_listen=listen,
            backend_url=getattr(args, "backend", None),
            **proxy_options(args),
        )
    except KeyboardInterrupt:
        pass  # a second Ctrl-C during shutdown: uvicorn already said what it was doing


Build = Callable[[argparse.Namespace], Any]


def serve_build(build: Build, args: argparse.Namespace, extra: Sequence[str] = (), *, app: Any = None) -> None:
    """Serve ``build(args)``, in this process or in ``args.workers`` worker processes.

    ``build`` must be a module-level function: each worker imports it and calls it with the same
    ``args`` (so resolve anything random, like a generated token, into ``args`` before calling).
    ``app``, if given, is ``build(args)`` already made by the caller, served as is with one worker.
    The workers share one listening socket (uvicorn's supervisor restarts a worker that dies).
    """
    check_bind(args.host, args.allow_remote)
    workers = getattr(args, "workers", 1)
    check_workers(workers, getattr(args, "backend", "memory://"))
    check_port(args.host, args.port)  # before building (and again, cheaply, in run_from_args)
    listen = check_metrics_listen(args, workers)
    if workers == 1:
        # ``app``: one already built from these args (e.g. to print its login lines), not built twice.
        run_from_args(app if app is not None else build(args), args, extra)
        return
    module = build.__module__
    if module == "__main__":  # `python -m chat`: the workers import it by its real name
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    os.environ[_BUILD_ENV] = f"{module}:{build.__qualname__}"
    # Only this process and its children read it; Namespace values (Path, str, int) pickle as is.
    os.environ[_ARGS_ENV] = base64.b64encode(pickle.dumps(args)).decode()
    config = make_config(
        "shared.server:worker_app",
        args.host,
        args.port,
        factory=True,
        workers=workers,
        log_level=args.log_level,
        **proxy_options(args),
    )
    for line in extra:
        print(line, flush=True)
    _supervise(config, workers, getattr(args, "drain_seconds", 0.0), getattr(args, "metrics_token", None), listen)


def check_metrics_listen(args: argparse.Namespace, workers: int) -> tuple[str, int] | None:
    """``--metrics-listen``: refused like ``--host`` off loopback without ``--allow-remote``, and
    each port (one per worker) checked free before anything starts."""
    listen: tuple[str, int] | None = getattr(args, "metrics_listen", None)
    if listen is None:
        return None
    host, port = listen
    check_bind(host, getattr(args, "allow_remote", False))
    if port + workers - 1 > 65535:
        _refuse(f"--metrics-listen port {port} leaves no room for {workers} workers (PORT+i each)")
    for i in range(workers):
        if (host, port + i) == (args.host, args.port):
            _refuse(f"--metrics-listen {host}:{port + i} is the server's own address: pick another port")
        check_port(host, port + i)
    return listen


def _supervise(
    config: uvicorn.Config,
    workers: int,
    drain_seconds: float = 0.0,
    metrics_token: str | None = None,
    metrics_listen: tuple[str, int] | None = None,
) -> None:
    """Run ``workers`` processes of our :class:`Server` on one socket; restart any that dies.

    uvicorn's own supervisor would run its plain ``Server`` in the workers, which waits for open
    streams at shutdown instead of ending them.
    """
    from uvicorn._subprocess import get_subprocess

    sock = config.bind_socket()

    def server(i: int) -> Server:
        # One per worker: worker i serves its own metrics at PORT+i (each process counts its own).
        at = None if metrics_listen is None else (metrics_listen[0], metrics_listen[1] + i)
        return Server(config, None, drain_seconds=drain_seconds, metrics_token=metrics_token, metrics_listen=at)

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    procs = [get_subprocess(config, target=server(i).run, sockets=[sock]) for i in range(workers)]
    for proc in procs:
        proc.start()
    log.info("started %d workers: %s", workers, [p.pid for p in procs])
    started = [time.monotonic()] * workers
    quick_deaths = 0
    try:
        while not stopping:
            time.sleep(0.5)
            for i, proc in enumerate(procs):
                if proc.is_alive() or stopping:
                    continue
                log.warning("worker %s exited with %s; starting another", proc.pid, proc.exitcode)
                # A worker that cannot even start (bad config, port, backend) would loop forever.
                quick_deaths = quick_deaths + 1 if time.monotonic() - started[i] < 5 else 0
                if quick_deaths >= 3 * workers:
                    raise SystemExit("workers keep exiting at start; see the errors above")
                procs[i] = get_subprocess(config, target=server(i).run, sockets=[sock])
                procs[i].start()
                started[i] = time.monotonic()
    finally:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)  # each worker ends its streams, then exits
        deadline = time.monotonic() + 10 + drain_seconds
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
        sock.close()


def worker_app() -> Any:
    """uvicorn's app factory in each worker of :func:`serve_build`."""
    target, args_b64 = os.environ.get(_BUILD_ENV), os.environ.get(_ARGS_ENV)
    if not target or not args_b64:
        raise RuntimeError(f"worker_app needs ${_BUILD_ENV} and ${_ARGS_ENV} (set by shared.server.serve_build)")
    module, _, name = target.partition(":")
    build: Build = getattr(importlib.import_module(module), name)
    args = pickle.loads(base64.b64decode(args_b64))  # written by our own parent process
    allowed = hosts_allowed(args.host, extra_hosts(args))
    app = with_mux(build(args), getattr(args, "backend", None))
    return HostCheck(HeadAsGet(app), allowed, proxy_headers=getattr(args, "proxy_headers", False))
