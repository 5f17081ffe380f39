"""The servers the bench compares, by name: how each is launched, one registry.

Every one serves :mod:`bench.server`'s contract (``GET /events``, ``POST /publish``
``{"n", "size", "rate"}``, ``GET /stats``) with the payloads of :mod:`bench.contract`, on the
port given, so the same load client measures them all:

- ``hub``: ours, ``python -m bench.server --impl hub`` (``--backend URL`` for Redis);
- ``naive``: the tutorial baseline, ``python -m bench.server --impl naive``;
- ``starlette``: sse-starlette as its README shows it (:mod:`bench.peers.starlette_peer`);
- ``go``: Go's net/http with write coalescing (``bench/peers/go/main.go``), built at run time
  into a temporary directory; unavailable (with the reason) when ``go`` is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GO_SOURCE = Path(__file__).parent / "go"


class Unavailable(Exception):
    """A peer that cannot run here; the message says why, in one line."""


@dataclass(frozen=True)
class Options:
    build_dir: Path  # where the Go peer is built (a temporary directory of the run)
    backend: str | None = None  # our hub's backend URL (memory:// when None)


@dataclass(frozen=True)
class Peer:
    name: str
    about: str
    # The command line, with ``{port}`` where the port goes; raises Unavailable.
    command: Callable[[Options], list[str]]


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args, "--host", "127.0.0.1", "--port", "{port}"]


def _hub(opts: Options) -> list[str]:
    backend = ["--backend", opts.backend] if opts.backend else []
    return [*_python("bench.server", "--impl", "hub"), *backend]


def go_binary(build_dir: Path) -> Path:
    """Build the Go peer once per ``build_dir`` (stdlib only, no module download)."""
    binary = build_dir / "sse-go-peer"
    if binary.exists():
        return binary
    go = shutil.which("go") or ("/usr/bin/go" if os.access("/usr/bin/go", os.X_OK) else None)
    if go is None:
        raise Unavailable("go is not installed (apt-get install golang-go): the Go peer is skipped")
    env = {**os.environ, "GO111MODULE": "off", "CGO_ENABLED": "0"}
    if not any(k in env for k in ("GOCACHE", "HOME", "XDG_CACHE_HOME")):
        env["GOCACHE"] = str(build_dir / "gocache")
    build_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=GO_SOURCE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise Unavailable(f"go build failed: {(proc.stderr or proc.stdout).strip()[:500]}")
    return binary


def _go(opts: Options) -> list[str]:
    return [str(go_binary(opts.build_dir)), "--host", "127.0.0.1", "--port", "{port}"]


PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("hub", "ours: Hub + sse_response (memory backend unless --backend)", _hub),
        Peer(
            "naive",
            "tutorial baseline: Litestar ServerSentEvent, a queue per subscriber",
            lambda o: _python("bench.server", "--impl", "naive"),
        ),
        Peer(
            "starlette",
            "sse-starlette EventSourceResponse, a queue per subscriber",
            lambda o: _python("bench.peers.starlette_peer"),
        ),
        Peer("go", "Go net/http, a goroutine per subscriber writing coalesced bytes", _go),
    )
}
