"""``python -m remote_exec [--policy FILE] [--token T] [--port 8000] [--data-dir .data]
[--backend redis://127.0.0.1:6379/0 --workers 2]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from litestar import Litestar

from shared.security import new_token
from shared.serve_cli import base_parser, check_bind, serve_build

from .app import TOKEN_ENV, create_app, login_text, token_from_env
from .policy import Policy, PolicyError


def load_policy(path: Path | None) -> Policy:
    try:
        return Policy.load(path) if path else Policy.default()
    except PolicyError as exc:
        sys.exit(f"remote_exec: bad policy: {exc}")


def build(args: argparse.Namespace) -> Litestar:
    """The app of one worker; every worker gets the same ``args`` (the token already resolved)."""
    return create_app(args.data_dir, token=args.token, policy=load_policy(args.policy), backend=args.backend)


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
    load_policy(args.policy)  # a bad policy stops us here, not in every worker
    # Resolved here, so that every worker accepts the same operator token.
    try:
        args.token = token_from_env(args.token)
    except ValueError as exc:
        parser.error(str(exc))
    generated = args.token is None
    if generated:
        args.token = new_token(24)
    host = f"[{args.host}]" if ":" in args.host else args.host
    serve_build(build, args, login_text(f"http://{host}:{args.port}", args.token, generated))


if __name__ == "__main__":
    main()
