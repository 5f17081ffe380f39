"""``python -m dashboard [--port 8000] [--control-token T] [--interval 1]``: the dashboard alone."""

from __future__ import annotations

import os

from shared.server import base_parser, run_from_args

from .app import create_app, login_lines


def main() -> None:
    parser = base_parser("dashboard", "Live system metrics in the browser, with guarded control actions.")
    parser.add_argument(
        "--control-token",
        default=os.environ.get("DASHBOARD_CONTROL_TOKEN") or None,
        help="token that allows control actions (default: $DASHBOARD_CONTROL_TOKEN, else one is generated)",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="sampling interval, 0.25-60 s (default: 1)")
    args = parser.parse_args()
    try:
        app = create_app(args.data_dir, control_token=args.control_token, interval=args.interval)
    except ValueError as exc:
        parser.error(str(exc))
    host = f"[{args.host}]" if ":" in args.host else args.host
    run_from_args(app, args, login_lines(app, f"http://{host}:{args.port}"))


if __name__ == "__main__":
    main()
