"""A small, fast Glances/htop in the browser that can also act: live psutil metrics over SSE,
and control actions confirmed by the acting browser through server-to-client requests."""

from __future__ import annotations

from .app import control_token, create_app, login_lines

__all__ = ["control_token", "create_app", "login_lines"]
