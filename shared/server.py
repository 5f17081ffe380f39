"""Running an app under uvicorn so that open SSE streams end promptly on shutdown.

uvicorn waits for streaming responses to finish before it runs the lifespan shutdown (and by
default waits forever), so a hub closed from ``on_shutdown`` would never be reached. Our
``Server`` closes the app's hubs first, then lets uvicorn shut down as usual, with a short
graceful timeout as a backstop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import socket
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from .hub import Hub
from .limits import ABORT_CONNECTION
from .security import redact_access_log

__all__ = ["SEND_BUFFER", "Server", "app_hubs", "base_parser", "check_bind", "make_config", "serve"]

# Kernel send buffer per connection. Linux otherwise grows it up to 4 MiB for a client that
# stopped reading: a thousand such clients pin gigabytes of kernel memory, and a stuck write
# (shared.limits) is only noticed once 4 MiB are queued. 256 KiB (the kernel doubles it) is
# still plenty for event streams and pages.
SEND_BUFFER = 256 * 1024

log = logging.getLogger(__name__)


def app_hubs(app: Any) -> list[Hub]:
    """Hubs an app declares in ``app.state.sse_hubs`` (or its mounted apps do)."""
    hubs: list[Hub] = []
    for child in getattr(app, "mounted_apps", list)():
        hubs.extend(app_hubs(child))
    state = getattr(app, "state", None)
    if state is not None:
        hubs.extend(getattr(state, "sse_hubs", None) or [])
    return hubs


class Server(uvicorn.Server):
    """``uvicorn.Server`` that ends the app's SSE streams before uvicorn waits for them.

    It also offers the apps a way to drop a connection at once (``ABORT_CONNECTION`` in the
    request's ``scope["state"]``), used to end streams to clients that stopped reading, and
    caps each connection's kernel send buffer at ``send_buffer`` bytes (``None``: the kernel's
    autotuning).
    """

    def __init__(self, config: uvicorn.Config, app: Any, *, send_buffer: int | None = SEND_BUFFER) -> None:
        super().__init__(config)
        self._app = app
        self.send_buffer = send_buffer
        self.loop: asyncio.AbstractEventLoop | None = None  # the serving loop, once started
        # client (host, port) -> connection, rebuilt on a miss: the watchdog may drop a thousand
        # connections in one sweep, and a scan of every connection for each would be quadratic.
        self._by_client: weakref.WeakValueDictionary[Any, Any] = weakref.WeakValueDictionary()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        # uvicorn copies the lifespan state into every request's scope["state"].
        self.lifespan.state[ABORT_CONNECTION] = self.abort_connection
        await super().startup(sockets)
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
        conn = self._by_client.get(client)
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

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        hubs = app_hubs(self._app)
        await asyncio.gather(*(hub.close() for hub in hubs), return_exceptions=True)
        await super().shutdown(sockets)


def make_config(app: Any, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> uvicorn.Config:
    kwargs.setdefault("timeout_graceful_shutdown", 2)
    kwargs.setdefault("log_level", "info")
    # Streams are long-lived; uvicorn's keep-alive timeout only applies between requests.
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", **kwargs)
    # After Config: it (re)configures uvicorn's loggers. Keeps ?token= values out of access logs.
    redact_access_log()
    return config


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> None:
    """Blocking: serve ``app`` until Ctrl-C / SIGTERM, closing SSE streams first on the way out."""
    Server(make_config(app, host, port, **kwargs), app).run()


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


def base_parser(prog: str, description: str, default_port: int = 8000) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=default_port, help=f"port (default: {default_port})")
    parser.add_argument("--data-dir", type=Path, default=Path(".data"), help="where SQLite files go (default: ./.data)")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def run_from_args(app: Any, args: argparse.Namespace, extra: Sequence[str] = ()) -> None:
    check_bind(args.host, args.allow_remote)
    for line in extra:
        print(line, flush=True)
    try:
        serve(app, args.host, args.port, log_level=args.log_level)
    except KeyboardInterrupt:
        pass  # a second Ctrl-C during shutdown: uvicorn already said what it was doing
