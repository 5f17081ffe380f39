"""``python -m chat --port 8000 --data-dir .data``: the chat alone."""

from __future__ import annotations

from shared.server import base_parser, run_from_args

from .app import create_app


def main() -> None:
    parser = base_parser("chat", "Serve the chat app (/chat/) alone.")
    args = parser.parse_args()
    app = create_app(args.data_dir)
    run_from_args(
        app,
        args,
        [
            f"Chat on http://{args.host}:{args.port}/chat/ (data in {args.data_dir.resolve()})",
        ],
    )


if __name__ == "__main__":
    main()
