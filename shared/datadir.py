"""Data files only the server's user can read, and a data directory that cannot be used said in
one line (issue 14: chat history, exec argv and audit logs were 0644; a read-only data dir
failed start with a 50-line traceback).

- :func:`private_dir`: made ``0700`` when missing. An existing directory is left as it is: it
  may be one the user chose (``--data-dir ~``); what matters is in the files, each ``0600``.
- :func:`private_file`: a data file (an SQLite database, a key) created ``0600`` before anyone
  opens it, or brought to ``0600`` if an older version made it wider. SQLite gives its ``-wal``,
  ``-shm`` and ``-journal`` files the database's mode, so they follow.
- :func:`usable_dir`: the check ``--data-dir`` runs before the server starts.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "DataDirError", "private_dir", "private_file", "usable_dir"]

DIR_MODE = 0o700
FILE_MODE = 0o600
_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


class DataDirError(OSError):
    """The data directory cannot be made or written; the message names the path and why."""


def private_dir(path: Path) -> Path:
    """``path`` as a directory, made owner-only (``0700``) if it did not exist."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot create the data directory {path}: {exc.strerror or exc}") from exc
    return path


def private_file(path: Path) -> Path:
    """``path`` exists as a file readable and writable by its owner only (its content untouched)."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise DataDirError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, FILE_MODE)  # made by an older version, or under a wide umask
    finally:
        os.close(fd)
    for suffix in _SQLITE_SIDECARS:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", FILE_MODE)
    return path


def usable_dir(value: str | Path) -> Path:
    """The data directory, made if missing and checked writable; ``DataDirError`` in one line
    saying which path and why (a read-only file system, no permission, a file in the way)."""
    path = Path(value)
    private_dir(path)
    if not path.is_dir():
        raise DataDirError(f"the data directory {path} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise DataDirError(f"cannot write to the data directory {path}: {exc.strerror or exc}") from exc
    return path
