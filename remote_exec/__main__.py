"""``python -m remote_exec [--policy FILE] [--token T] [--port 8000] [--data-dir .data]``."""

from __future__ import annotations

import sys
from pathlib import Path

from shared.server import base_parser, check_bind, run_from_args

from .app import TOKEN_ENV, create_app, login_lines, token_from_env
from .policy import Policy, PolicyError


def main() -> None:
    parser = base_parser("remote_exec", "Run commands and stream their output to browsers (/exec/).")
    parser.add_argument(
        "--token",
        default=None,
        help=f"operator token (default: ${TOKEN_ENV}, else a random one, printed with a login URL); "
        f"prefer ${TOKEN_ENV}: a command line is visible to other local users",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="policy file (TOML); default: remote_exec/default_policy.toml (a small read-only allowlist)",
    )
    args = parser.parse_args()
    check_bind(args.host, args.allow_remote)
    try:
        policy = Policy.load(args.policy) if args.policy else Policy.default()
    except PolicyError as exc:
        sys.exit(f"remote_exec: bad policy: {exc}")
    app = create_app(args.data_dir, token=token_from_env(args.token), policy=policy)
    host = f"[{args.host}]" if ":" in args.host else args.host
    run_from_args(app, args, login_lines(app, f"http://{host}:{args.port}"))


if __name__ == "__main__":
    main()
