"""``python -m showcase --host 127.0.0.1 --port 8000``: every app and demo in one process."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import remote_exec
from dashboard.settings import DashboardSettings
from remote_exec.settings import ExecSettings
from shared.mount import Mounts
from shared.security import new_token
from shared.serve_cli import base_parser, check_workers, serve_build

from .app import Settings, create_app, login_lines


def main() -> None:
    parser = base_parser("showcase", "Serve every app and demo of the project from one process.")
    parser.add_argument(
        "--exec-token", default=None, help=f"remote exec operator token (default: ${remote_exec.TOKEN_ENV} or random)"
    )
    parser.add_argument(
        "--exec-policy",
        type=Path,
        default=None,
        help="remote exec policy (TOML); default: a small read-only allowlist. "
        "remote_exec/dev_policy.toml allows any command (for the REPL demo).",
    )
    parser.add_argument(
        "--dashboard-token",
        default=os.environ.get("DASHBOARD_CONTROL_TOKEN") or None,
        help="dashboard control token (default: $DASHBOARD_CONTROL_TOKEN or random)",
    )
    args = parser.parse_args()
    check_workers(args.workers, args.backend)  # before anything is built
    try:
        args.exec_token = remote_exec.token_from_env(args.exec_token, flag="--exec-token")
    except ValueError as exc:
        parser.error(str(exc))
    generated: list[str] = []  # the apps whose token is made up here (login_lines prints those)
    # Made here, once: with --workers every worker builds the app from these same args.
    if args.exec_token is None:
        args.exec_token = new_token()
        generated.append("exec")
    if args.dashboard_token is None:
        args.dashboard_token = new_token()
        generated.append("dashboard")
    app = build(args)  # also checks the policy before any worker starts
    host = f"[{args.host}]" if ":" in args.host else args.host
    serve_build(build, args, login_lines(app, f"http://{host}:{args.port}", generated=generated), app=app)


def build(args: argparse.Namespace) -> Mounts:
    """The app for ``args``; each worker process calls it."""
    try:
        policy = remote_exec.Policy.load(args.exec_policy) if args.exec_policy else remote_exec.Policy.default()
    except remote_exec.PolicyError as exc:
        sys.exit(f"showcase: bad exec policy: {exc}")
    settings = Settings(
        data_dir=args.data_dir,
        backend_url=args.backend,
        exec=ExecSettings(token=args.exec_token, policy=policy),
        dashboard=DashboardSettings(control_token=args.dashboard_token),
    )
    return create_app(settings)


if __name__ == "__main__":
    main()
