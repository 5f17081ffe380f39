"""Running an app under uvicorn so that open SSE streams end promptly on shutdown.

uvicorn waits for streaming responses to finish before it runs the lifespan shutdown (and by
default waits forever), so a hub closed from ``on_shutdown`` would never be reached. Our
``Server`` closes every app's ``closables`` first (:mod:`shared.apps`), then lets uvicorn shut
down as usual, with a short graceful timeout as a backstop.

The command line around it is :mod:`shared.serve_cli`, ``--workers`` :mod:`shared.supervisor`,
the HTTP protocol :mod:`shared.head_protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import weakref
from collections.abc import Sequence
from typing import Any

import uvicorn

from .apps import Closable, shutdown_groups
from .gc_tuning import tune_gc
from .head import HeadAsGet
from .head_protocol import HEAD_TIMEOUT, MAX_HEAD_BYTES, HeadWithBodyProtocol
from .health import HEALTH, Health
from .hosts import HostCheck
from .hosts import allowed_hosts as hosts_allowed
from .limits import ABORT_CONNECTION
from .metrics import METRICS, Metrics
from .metrics_listener import MetricsListener
from .security import redact_access_log

__all__ = ["SEND_BUFFER", "Server", "make_config", "serve", "tune_gc", "with_mux"]

# Kernel send buffer per connection. Linux otherwise grows it up to 4 MiB for a client that
# stopped reading: a thousand such clients pin gigabytes of kernel memory, and a stuck write
# (shared.limits) is only noticed once 4 MiB are queued. 256 KiB (the kernel doubles it) is
# still plenty for event streams and pages.
SEND_BUFFER = 256 * 1024

log = logging.getLogger(__name__)


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
        return [item for group in shutdown_groups(self.served_app()) for item in group]

    def served_app(self) -> Any:
        """The app this server runs, with what :func:`make_config` put around it (the mux, whose
        streams must end at shutdown too), or (in a worker) the one uvicorn built, with uvicorn's
        middlewares around it (:func:`shared.apps.shutdown_groups` sees through them)."""
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
        await asyncio.gather(*(_close_in_order(group) for group in shutdown_groups(self.served_app())))
        await super().shutdown(sockets)
        if self._metrics_listener is not None:  # last: a scrape during the drain still answers
            await self._metrics_listener.close()


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
