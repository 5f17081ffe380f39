"""``python -m chat --port 8000 --data-dir .data [--backend redis://127.0.0.1:6379/0 --workers 2]``."""

from __future__ import annotations

import argparse

from litestar import Litestar

from shared.serve_cli import base_parser, serve_build

from .app import create_app
from .wiring import is_redis


def build(args: argparse.Namespace) -> Litestar:
    """The app each worker serves (``shared.serve_cli.serve_build`` imports this by name)."""
    return create_app(args.data_dir, backend=args.backend)


def main() -> None:
    parser = base_parser("chat", "Serve the chat app (/chat/) alone.")
    args = parser.parse_args()
    try:
        redis = is_redis(args.backend)
    except ValueError as exc:
        parser.error(str(exc))
    where = f"Redis at {args.backend}" if redis else f"SQLite in {args.data_dir.resolve()}"
    workers = f", {args.workers} workers" if args.workers > 1 else ""
    serve_build(build, args, [f"Chat on http://{args.host}:{args.port}/chat/ (state in {where}{workers})"])


if __name__ == "__main__":
    main()
