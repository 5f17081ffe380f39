"""``python -m showcase --host 127.0.0.1 --port 8000``: every app and demo in one process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import remote_exec
from shared.server import base_parser, run_from_args

from .app import Settings, create_app, login_lines


def main() -> None:
    parser = base_parser("showcase", "Serve every app and demo of the project from one process.")
    parser.add_argument("--backend", default=None, help="hub backend URL (default: memory://)")
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
    try:
        policy = remote_exec.Policy.load(args.exec_policy) if args.exec_policy else remote_exec.Policy.default()
    except remote_exec.PolicyError as exc:
        sys.exit(f"showcase: bad exec policy: {exc}")
    settings = Settings(
        data_dir=args.data_dir,
        backend_url=args.backend,
        exec_token=remote_exec.token_from_env(args.exec_token),
        exec_policy=policy,
        dashboard_token=args.dashboard_token,
    )
    app = create_app(settings)
    host = f"[{args.host}]" if ":" in args.host else args.host
    run_from_args(app, args, login_lines(app, f"http://{host}:{args.port}"))


if __name__ == "__main__":
    main()
