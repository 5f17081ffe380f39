"""Helpers for remote_exec instances as real processes: leave no run behind."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from pathlib import Path


def kill_leftovers(*data_dirs: Path) -> None:
    """Whatever a failed test left running: each run is its own process group."""
    for data in data_dirs:
        db = data / "exec.sqlite3"
        if not db.exists():
            continue
        with contextlib.closing(sqlite3.connect(db)) as conn:
            pids = [pid for (pid,) in conn.execute("SELECT pid FROM runs WHERE pid IS NOT NULL")]
        for pid in pids:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
