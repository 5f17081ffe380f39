"""Multi-user chat rooms on SSE + POST that never lose or duplicate a message (``/chat/``)."""

from __future__ import annotations

from .app import create_app
from .backend import SqliteBackend
from .db import Database
from .model import ChatStore
from .settings import ChatSettings

__all__ = ["ChatSettings", "ChatStore", "Database", "SqliteBackend", "create_app"]
