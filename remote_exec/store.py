"""SQLite: runs (so finished ones are browsable after a restart), the audit log, viewer tokens
and login sessions. One connection, used from the event loop; every statement is short."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared import sqlite
from shared.datadir import private_file

__all__ = ["RunRow", "Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    argv TEXT NOT NULL,
    command TEXT NOT NULL,
    shell INTEGER NOT NULL,
    cwd TEXT NOT NULL,
    env_keys TEXT NOT NULL,
    pty INTEGER NOT NULL,
    cols INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    owner TEXT NOT NULL,
    addr TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    signal TEXT,
    started_at REAL NOT NULL,
    ended_at REAL,
    duration_s REAL,
    timeout_s REAL NOT NULL,
    output_bytes INTEGER NOT NULL DEFAULT 0,
    dropped_bytes INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    pid_started REAL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    addr TEXT NOT NULL,
    action TEXT NOT NULL,
    run_id TEXT,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS viewer_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    run_id TEXT,
    label TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    sid_hash TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    run_id TEXT,
    parent TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

RUNNING = "running"
# Final states: exited (code), signalled (a signal ended it), timeout, terminated (asked to),
# failed (could not start), lost (the server died while it ran).
FINAL = ("exited", "signalled", "timeout", "terminated", "failed", "lost")


@dataclass(slots=True)
class RunRow:
    id: str
    argv: list[str]
    command: str
    shell: bool
    cwd: str
    env_keys: list[str]
    pty: bool
    cols: int
    rows: int
    owner: str
    addr: str
    status: str
    exit_code: int | None
    signal: str | None
    started_at: float
    ended_at: float | None
    duration_s: float | None
    timeout_s: float
    output_bytes: int
    dropped_bytes: int
    pid: int | None
    pid_started: float | None

    def public(self) -> dict[str, Any]:
        """What clients see (no pid)."""
        return {
            "id": self.id,
            "argv": self.argv,
            "command": self.command,
            "shell": self.shell,
            "cwd": self.cwd,
            "env_keys": self.env_keys,
            "pty": self.pty,
            "cols": self.cols,
            "rows": self.rows,
            "owner": self.owner,
            "status": self.status,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": self.duration_s,
            "timeout_s": self.timeout_s,
            "output_bytes": self.output_bytes,
            "dropped_bytes": self.dropped_bytes,
        }


def _row(r: sqlite3.Row) -> RunRow:
    return RunRow(
        id=r["id"],
        argv=json.loads(r["argv"]),
        command=r["command"],
        shell=bool(r["shell"]),
        cwd=r["cwd"],
        env_keys=json.loads(r["env_keys"]),
        pty=bool(r["pty"]),
        cols=r["cols"],
        rows=r["rows"],
        owner=r["owner"],
        addr=r["addr"],
        status=r["status"],
        exit_code=r["exit_code"],
        signal=r["signal"],
        started_at=r["started_at"],
        ended_at=r["ended_at"],
        duration_s=r["duration_s"],
        timeout_s=r["timeout_s"],
        output_bytes=r["output_bytes"],
        dropped_bytes=r["dropped_bytes"],
        pid=r["pid"],
        pid_started=r["pid_started"],
    )


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the exec store is not open: the app's on_startup opens it")
        return self._db

    def open(self) -> None:
        if self._db is not None:
            return
        private_file(self.path)  # 0600: argv, tokens' hashes and the audit are the operator's
        # The connection is made on the server's loop thread and only used there.
        db = sqlite.connect(self.path, rows=True)
        db.executescript(_SCHEMA)
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- runs -------------------------------------------------------------------------------

    def insert_run(self, row: RunRow) -> None:
        self.db.execute(
            "INSERT INTO runs (id, argv, command, shell, cwd, env_keys, pty, cols, rows, owner, addr, status,"
            " started_at, timeout_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.id,
                json.dumps(row.argv),
                row.command,
                int(row.shell),
                row.cwd,
                json.dumps(row.env_keys),
                int(row.pty),
                row.cols,
                row.rows,
                row.owner,
                row.addr,
                row.status,
                row.started_at,
                row.timeout_s,
            ),
        )

    def set_pid(self, run_id: str, pid: int, pid_started: float | None) -> None:
        self.db.execute("UPDATE runs SET pid = ?, pid_started = ? WHERE id = ?", (pid, pid_started, run_id))

    def set_size(self, run_id: str, cols: int, rows: int) -> None:
        self.db.execute("UPDATE runs SET cols = ?, rows = ? WHERE id = ?", (cols, rows, run_id))

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        exit_code: int | None,
        signal: str | None,
        ended_at: float,
        duration_s: float | None,
        output_bytes: int,
        dropped_bytes: int,
    ) -> None:
        self.db.execute(
            "UPDATE runs SET status=?, exit_code=?, signal=?, ended_at=?, duration_s=?, output_bytes=?,"
            " dropped_bytes=? WHERE id=?",
            (status, exit_code, signal, ended_at, duration_s, output_bytes, dropped_bytes, run_id),
        )

    def get_run(self, run_id: str) -> RunRow | None:
        r = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _row(r) if r is not None else None

    def list_runs(self, limit: int = 200) -> list[RunRow]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY started_at DESC LIMIT ?", (limit,)).fetchall()
        return [_row(r) for r in rows]

    def running_runs(self) -> list[RunRow]:
        rows = self.db.execute("SELECT * FROM runs WHERE status = ?", (RUNNING,)).fetchall()
        return [_row(r) for r in rows]

    # -- audit ------------------------------------------------------------------------------

    def audit(self, actor: str, role: str, addr: str, action: str, run_id: str | None, **detail: Any) -> None:
        self.db.execute(
            "INSERT INTO audit (at, actor, role, addr, action, run_id, detail) VALUES (?,?,?,?,?,?,?)",
            (time.time(), actor, role, addr, action, run_id, json.dumps(detail, separators=(",", ":"))),
        )

    def list_audit(self, limit: int = 200, run_id: str | None = None) -> list[dict[str, Any]]:
        if run_id is None:
            rows = self.db.execute("SELECT * FROM audit ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = self.db.execute(
                "SELECT * FROM audit WHERE run_id = ? ORDER BY seq DESC LIMIT ?", (run_id, limit)
            ).fetchall()
        return [
            {
                "seq": r["seq"],
                "at": r["at"],
                "actor": r["actor"],
                "role": r["role"],
                "addr": r["addr"],
                "action": r["action"],
                "run_id": r["run_id"],
                "detail": json.loads(r["detail"]),
            }
            for r in rows
        ]

    # -- viewer tokens and sessions -----------------------------------------------------------

    def add_viewer_token(
        self, token_id: str, token_hash: str, run_id: str | None, label: str, created_by: str, expires_at: float
    ) -> None:
        self.db.execute(
            "INSERT INTO viewer_tokens (id, token_hash, run_id, label, created_by, created_at, expires_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (token_id, token_hash, run_id, label, created_by, time.time(), expires_at),
        )

    def find_viewer_token(self, token_hash: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM viewer_tokens WHERE token_hash = ? AND revoked = 0 AND expires_at > ?",
            (token_hash, time.time()),
        ).fetchone()
        return row

    def get_viewer_token(self, token_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM viewer_tokens WHERE id = ? AND revoked = 0 AND expires_at > ?", (token_id, time.time())
        ).fetchone()
        return row

    def list_viewer_tokens(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, token_hash, run_id, label, created_by, created_at, expires_at, revoked FROM viewer_tokens"
            " ORDER BY created_at DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [dict(r) | {"revoked": bool(r["revoked"])} for r in rows]

    def revoke_viewer_token(self, token_id: str) -> bool:
        cur = self.db.execute("UPDATE viewer_tokens SET revoked = 1 WHERE id = ? AND revoked = 0", (token_id,))
        self.db.execute("DELETE FROM sessions WHERE parent = ?", (f"viewer:{token_id}",))
        return cur.rowcount > 0

    def add_session(
        self, sid_hash: str, role: str, name: str, run_id: str | None, parent: str, expires_at: float
    ) -> None:
        now = time.time()
        self.db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        self.db.execute(
            "INSERT INTO sessions (sid_hash, role, name, run_id, parent, expires_at) VALUES (?,?,?,?,?,?)",
            (sid_hash, role, name, run_id, parent, expires_at),
        )

    def get_session(self, sid_hash: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM sessions WHERE sid_hash = ? AND expires_at > ?", (sid_hash, time.time())
        ).fetchone()
        return row

    def delete_session(self, sid_hash: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE sid_hash = ?", (sid_hash,))
