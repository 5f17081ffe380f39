"""``python -m examples.minimal [--port 8000] [--backend redis://... --workers 2]``."""

from __future__ import annotations

import argparse

from shared.apps import App
from shared.serve_cli import base_parser, serve_build

from .app import create_app


def build(args: argparse.Namespace) -> App:
    """The app of one worker (``serve_build`` imports this by name in each, with the same ``args``)."""
    return create_app(backend=args.backend)


def main() -> None:
    args = base_parser("examples.minimal", "The smallest app on shared: one topic over SSE.").parse_args()
    base = f"http://{args.host}:{args.port}/minimal"
    serve_build(build, args, [f"Stream: {base}/events   publish: POST {base}/publish {{'text': ...}}"])


if __name__ == "__main__":
    main()
