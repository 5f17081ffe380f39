"""Where viewer tokens and login sessions are kept: one small interface, two backends.

``SqliteCredentials`` keeps them in the instance's ``exec.sqlite3`` (one server, or workers on one
data dir). ``remote_exec.redis_state.RedisCredentials`` keeps them in Redis, so that with several
instances a token or a session made on one works on every other, even after the one that made it
died (issue 13 part 4). Both are checked by one contract suite (``tests/remote_exec/test_credentials.py``).

Only hashes are stored: a token's or session id's SHA-256, never the secret itself.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

from .store import Store

__all__ = ["Credentials", "Session", "SqliteCredentials", "ViewerToken"]


@dataclass(frozen=True, slots=True)
class ViewerToken:
    id: str
    token_hash: str
    run_id: str | None
    label: str
    created_by: str
    created_at: float
    expires_at: float
    revoked: bool = False

    def usable(self, now: float | None = None) -> bool:
        return not self.revoked and self.expires_at > (time.time() if now is None else now)

    def public(self) -> dict[str, Any]:
        """What ``GET /exec/tokens`` lists (no hash)."""
        out = asdict(self)
        del out["token_hash"]
        return out


@dataclass(frozen=True, slots=True)
class Session:
    sid_hash: str
    role: str
    name: str
    run_id: str | None
    parent: str  # "operator:<fingerprint>" or "viewer:<token id>"
    expires_at: float


class Credentials(ABC):
    """Viewer tokens (by hash and by id) and login sessions (by the hash of their id)."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect or open (the app's startup calls it once the store is open)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Let go of connections."""

    @abstractmethod
    async def add_token(self, token: ViewerToken) -> None:
        """Keep a new viewer token until it expires."""

    @abstractmethod
    async def find_token(self, token_hash: str) -> ViewerToken | None:
        """The usable (not revoked, not expired) token with this hash."""

    @abstractmethod
    async def get_token(self, token_id: str) -> ViewerToken | None:
        """The usable token with this id."""

    @abstractmethod
    async def list_tokens(self, limit: int = 200) -> list[ViewerToken]:
        """Tokens, newest first, revoked ones included (until they would have expired)."""

    @abstractmethod
    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a usable token (and end its sessions); ``False`` if there is none by that id."""

    @abstractmethod
    async def add_session(self, session: Session) -> None:
        """Keep a login session until it expires."""

    @abstractmethod
    async def get_session(self, sid_hash: str) -> Session | None:
        """The unexpired session with this hash (its parent token is checked by the caller)."""

    @abstractmethod
    async def delete_session(self, sid_hash: str) -> None:
        """Log a session out."""


class SqliteCredentials(Credentials):
    """In the exec store's SQLite file: each statement is short and runs on the event loop."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def add_token(self, token: ViewerToken) -> None:
        self.store.add_viewer_token(
            token.id, token.token_hash, token.run_id, token.label, token.created_by, token.expires_at
        )

    async def find_token(self, token_hash: str) -> ViewerToken | None:
        row = self.store.find_viewer_token(token_hash)
        return _token(dict(row)) if row is not None else None

    async def get_token(self, token_id: str) -> ViewerToken | None:
        row = self.store.get_viewer_token(token_id)
        return _token(dict(row)) if row is not None else None

    async def list_tokens(self, limit: int = 200) -> list[ViewerToken]:
        return [_token(r) for r in self.store.list_viewer_tokens(limit)]

    async def revoke_token(self, token_id: str) -> bool:
        return self.store.revoke_viewer_token(token_id)

    async def add_session(self, session: Session) -> None:
        self.store.add_session(
            session.sid_hash, session.role, session.name, session.run_id, session.parent, session.expires_at
        )

    async def get_session(self, sid_hash: str) -> Session | None:
        row = self.store.get_session(sid_hash)
        if row is None:
            return None
        return Session(row["sid_hash"], row["role"], row["name"], row["run_id"], row["parent"], row["expires_at"])

    async def delete_session(self, sid_hash: str) -> None:
        self.store.delete_session(sid_hash)


def _token(row: dict[str, Any]) -> ViewerToken:
    return ViewerToken(
        id=str(row["id"]),
        token_hash=str(row.get("token_hash") or ""),
        run_id=row.get("run_id"),
        label=str(row["label"]),
        created_by=str(row["created_by"]),
        created_at=float(row["created_at"]),
        expires_at=float(row["expires_at"]),
        revoked=bool(row.get("revoked")),
    )
