"""``python -m examples.toy [--port 8000]``: the live poll alone; open ``/poll/`` in two browsers."""

from __future__ import annotations

import argparse

from shared.apps import App
from shared.serve_cli import base_parser, serve_build

from .app import create_app


def build(args: argparse.Namespace) -> App:
    return create_app(backend=args.backend)


def main() -> None:
    args = base_parser("examples.toy", "A live poll over SSE + POST.").parse_args()
    serve_build(build, args, [f"Poll on http://{args.host}:{args.port}/poll/"])


if __name__ == "__main__":
    main()
