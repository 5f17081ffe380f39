"""Several processes opening one new SQLite file at the same moment, as ``--workers N`` does at
start-up: every store opens (none fails with "database is locked"), in real processes on a real
file. Before shared/sqlite.py, the exec store had no busy timeout and the dashboard's set theirs
after switching to WAL, so a worker's start-up could fail and be restarted."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

WORKERS = 6
ROUNDS = 4


def _open(kind: str, path: str, start: object) -> str:
    start.wait(10)  # type: ignore[attr-defined]
    try:
        if kind == "exec":
            from remote_exec.store import Store

            store = Store(Path(path))
            store.open()
            store.close()
        elif kind == "audit":
            from dashboard.audit import AuditLog

            audit = AuditLog(Path(path))
            audit.open()
            audit.close()
        else:
            from dashboard.sessions import SqliteSessions

            sessions = SqliteSessions(Path(path))
            sessions._open()
            asyncio.run(sessions.close())
    except sqlite3.OperationalError as exc:
        return f"{kind}: {exc}"
    return "ok"


@pytest.mark.parametrize("kind", ["exec", "audit", "sessions"])
def test_workers_open_one_new_file_together(tmp_path: Path, kind: str) -> None:
    ctx = multiprocessing.get_context("spawn")  # as uvicorn starts its workers
    failures = []
    with ctx.Pool(WORKERS) as pool:
        manager = ctx.Manager()
        for n in range(ROUNDS):
            start = manager.Barrier(WORKERS)
            path = str(tmp_path / f"{kind}-{n}.sqlite3")
            results = pool.starmap(_open, [(kind, path, start)] * WORKERS)
            failures += [r for r in results if r != "ok"]
        manager.shutdown()
    assert not failures, failures
