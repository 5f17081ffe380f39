"""``python -m showcase --host 127.0.0.1 --port 8000``: every app and demo in one process."""

from __future__ import annotations

from shared.server import base_parser, run_from_args

from .app import create_app


def main() -> None:
    parser = base_parser("showcase", "Serve every app and demo of the project from one process.")
    parser.add_argument("--backend", default=None, help="hub backend URL (default: memory://)")
    args = parser.parse_args()
    app = create_app(args.data_dir, args.backend)
    run_from_args(app, args, [f"Serving all apps on http://{args.host}:{args.port}/"])


if __name__ == "__main__":
    main()
