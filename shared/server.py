"""Running an app under uvicorn so that open SSE streams end promptly on shutdown.

uvicorn waits for streaming responses to finish before it runs the lifespan shutdown (and by
default waits forever), so a hub closed from ``on_shutdown`` would never be reached. Our
``Server`` closes the app's hubs first, then lets uvicorn shut down as usual, with a short
graceful timeout as a backstop.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from .hub import Hub

__all__ = ["Server", "app_hubs", "base_parser", "check_bind", "make_config", "serve"]

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
    """``uvicorn.Server`` that ends the app's SSE streams before uvicorn waits for them."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        hubs = app_hubs(self._app)
        await asyncio.gather(*(hub.close() for hub in hubs), return_exceptions=True)
        await super().shutdown(sockets)


def make_config(app: Any, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> uvicorn.Config:
    kwargs.setdefault("timeout_graceful_shutdown", 2)
    kwargs.setdefault("log_level", "info")
    # Streams are long-lived; uvicorn's keep-alive timeout only applies between requests.
    return uvicorn.Config(app, host=host, port=port, lifespan="on", **kwargs)


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
    serve(app, args.host, args.port, log_level=args.log_level)
