"""Data files only the server's user may read: a directory 0700 when we make it, files 0600.

SQLite makes its ``-wal`` and ``-shm`` files with the mode of the database file, so creating the
database 0600 before SQLite opens it is enough for all three (issue 14.11).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["private_file"]


def private_file(path: Path) -> Path:
    """Make ``path`` (empty) readable by its owner only, or tighten it to that if it exists."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        with contextlib.suppress(PermissionError):  # not ours to change: leave it as it is
            os.chmod(path, 0o600)
    return path
