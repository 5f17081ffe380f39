"""``python -m dashboard [--port 8000] [--control-token T] [--interval 1] [--host-name NAME]
[--backend redis://... [--workers N]] [--login-hours 12] [--login-idle-hours 12]``: the dashboard
alone, for one host or several."""

from __future__ import annotations

import argparse
import os

from litestar import Litestar

from shared.security import new_token
from shared.serve_cli import base_parser, serve_build

from .app import create_app, login_lines
from .settings import DashboardSettings


def build(args: argparse.Namespace) -> Litestar:
    """The app of one worker (``serve_build`` calls it in each, with the same ``args``)."""
    settings = DashboardSettings(
        control_token=args.control_token,
        interval=args.interval,
        host_name=args.host_name,
        login_max_age=args.login_hours * 3600,
        login_idle=args.login_idle_hours * 3600,
    )
    return create_app(args.data_dir, settings, backend=args.backend)


def main() -> None:
    parser = base_parser("dashboard", "Live system metrics in the browser, with guarded control actions.")
    parser.add_argument(
        "--control-token",
        default=os.environ.get("DASHBOARD_CONTROL_TOKEN") or None,
        help="token that allows control actions (default: $DASHBOARD_CONTROL_TOKEN, else one is generated); "
        "every instance showing the same hosts needs the same one",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="sampling interval, 0.25-60 s (default: 1)")
    parser.add_argument(
        "--host-name",
        default=None,
        help="the name this instance's host is listed under (default: the machine's name); instances on one "
        "--backend redis://... show each other's hosts",
    )
    parser.add_argument(
        "--login-hours", type=float, default=12.0, help="a page's log-in lasts at most this long (default: 12)"
    )
    parser.add_argument(
        "--login-idle-hours", type=float, default=12.0, help="and ends when unused this long (default: 12)"
    )
    args = parser.parse_args()
    for flag, value in (("--login-hours", args.login_hours), ("--login-idle-hours", args.login_idle_hours)):
        if not 0 < value <= 8760:
            parser.error(f"{flag} must be more than 0 and at most 8760 (a year), not {value:g}")
    # Made here, once: every worker builds its app from these args, and they must agree on it.
    args.control_token_generated = args.control_token is None
    if args.control_token is None:
        args.control_token = new_token()
    try:
        app = build(args)  # also checks the arguments before any worker starts
    except ValueError as exc:
        parser.error(str(exc))
    host = f"[{args.host}]" if ":" in args.host else args.host
    lines = login_lines(app, f"http://{host}:{args.port}", generated=args.control_token_generated)
    serve_build(build, args, lines, app=app)


if __name__ == "__main__":
    main()
