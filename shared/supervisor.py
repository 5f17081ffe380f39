"""``--workers N``: N processes of our :class:`shared.server.Server` on one socket, each building
the app itself (:func:`worker_app`), restarted when one dies."""

from __future__ import annotations

import base64
import importlib
import logging
import os
import pickle
import signal
import time
from typing import Any

import uvicorn

from .head import HeadAsGet
from .hosts import HostCheck
from .hosts import allowed_hosts as hosts_allowed
from .serve_cli import Build, extra_hosts
from .server import Server, with_mux

__all__ = ["ARGS_ENV", "BUILD_ENV", "supervise", "worker_app"]

# How a worker process learns which app to build, and with which arguments (see serve_build).
BUILD_ENV = "SSE_WORKER_BUILD"
ARGS_ENV = "SSE_WORKER_ARGS"

log = logging.getLogger(__name__)


def supervise(
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
    target, args_b64 = os.environ.get(BUILD_ENV), os.environ.get(ARGS_ENV)
    if not target or not args_b64:
        raise RuntimeError(f"worker_app needs ${BUILD_ENV} and ${ARGS_ENV} (set by shared.serve_cli.serve_build)")
    module, _, name = target.partition(":")
    build: Build = getattr(importlib.import_module(module), name)
    args = pickle.loads(base64.b64decode(args_b64))  # written by our own parent process
    allowed = hosts_allowed(args.host, extra_hosts(args))
    app = with_mux(build(args), getattr(args, "backend", None))
    return HostCheck(HeadAsGet(app), allowed, proxy_headers=getattr(args, "proxy_headers", False))
