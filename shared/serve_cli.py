"""The command line every ``python -m <app>`` shares: :func:`base_parser`, the checks made before
anything starts (``check_bind``, ``check_port``, ``check_workers``...), and :func:`serve_build`,
which serves the app in this process or, with ``--workers N``, in N (:mod:`shared.supervisor`)."""

from __future__ import annotations

import argparse
import base64
import errno
import ipaddress
import os
import pickle
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from .datadir import DataDirError, usable_dir
from .metrics import METRICS_TOKEN_ENV
from .metrics_listener import parse_listen
from .server import make_config, serve

__all__ = [
    "ALLOWED_HOSTS_ENV",
    "BACKEND_ENV",
    "Build",
    "base_parser",
    "check_bind",
    "check_metrics_listen",
    "check_port",
    "check_workers",
    "extra_hosts",
    "proxy_options",
    "run_from_args",
    "serve_build",
]

# The backend URL when --backend is not given, e.g. redis://127.0.0.1:6379/0.
BACKEND_ENV = "SSE_BACKEND"
# --allowed-hosts when not given.
ALLOWED_HOSTS_ENV = "SSE_ALLOWED_HOSTS"
DRAIN_ENV = "SSE_DRAIN_SECONDS"
METRICS_LISTEN_ENV = "SSE_METRICS_LISTEN"


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
    from .supervisor import ARGS_ENV, BUILD_ENV, supervise  # only with --workers

    module = build.__module__
    if module == "__main__":  # `python -m chat`: the workers import it by its real name
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    os.environ[BUILD_ENV] = f"{module}:{build.__qualname__}"
    # Only this process and its children read it; Namespace values (Path, str, int) pickle as is.
    os.environ[ARGS_ENV] = base64.b64encode(pickle.dumps(args)).decode()
    config = make_config(
        "shared.supervisor:worker_app",
        args.host,
        args.port,
        factory=True,
        workers=workers,
        log_level=args.log_level,
        **proxy_options(args),
    )
    for line in extra:
        print(line, flush=True)
    supervise(config, workers, getattr(args, "drain_seconds", 0.0), getattr(args, "metrics_token", None), listen)


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
