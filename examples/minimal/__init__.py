"""The smallest app on ``shared``: one topic, one stream, one publish. ``python -m examples.minimal``."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
