"""A live poll: the sixth app, built on the app contract (``docs/app-contract.md``). ``python -m examples.toy``."""

from __future__ import annotations

from .app import create_app
from .settings import PollSettings

__all__ = ["PollSettings", "create_app"]
