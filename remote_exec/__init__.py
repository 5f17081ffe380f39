"""Remote execution over SSE + POST: run commands, stream their output, send input and signals,
share the session with read-only viewers. Mounted at ``/exec/``; ``python -m remote_exec``."""

from __future__ import annotations

from .app import TOKEN_ENV, create_app, login_lines, operator_token, token_from_env
from .policy import Policy, PolicyError, PolicyRefusal

__all__ = [
    "TOKEN_ENV",
    "Policy",
    "PolicyError",
    "PolicyRefusal",
    "create_app",
    "login_lines",
    "operator_token",
    "token_from_env",
]
