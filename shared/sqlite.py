"""One way to open the SQLite files the apps keep (chat history, exec runs, dashboard log-ins and
audit), so every one of them behaves the same with several processes (``--workers N``) on one file.

``busy_timeout`` is set before anything else, so with workers starting together one process's
schema script waits for another's instead of failing at once with "database is locked" (which
made a worker's start-up fail and be restarted). Switching a new file to WAL is the exception:
SQLite answers that ``PRAGMA`` with "locked" without calling the busy handler while another
connection holds the file, so it is retried here, for up to the same timeout.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Literal

__all__ = ["connect"]


def connect(
    path: Path | str,
    *,
    wal: bool = True,
    synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL",
    busy_timeout_ms: int = 10_000,
    rows: bool = False,
) -> sqlite3.Connection:
    """A connection in autocommit mode (``isolation_level=None``: callers issue BEGIN/COMMIT
    themselves, so a read is one snapshot), usable from the thread that serves the app's loop and
    its worker threads (callers serialise their own use). ``rows``: rows as ``sqlite3.Row``."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if wal:
            _to_wal(conn, busy_timeout_ms / 1000)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    if rows:
        conn.row_factory = sqlite3.Row
    return conn


def _to_wal(conn: sqlite3.Connection, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # another process is switching it, or making its schema
