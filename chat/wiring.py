"""Which store the chat runs on, and the parts that go with it.

- SQLite (the default, and what ``memory://`` means for the chat): the room logs, state and
  session key in ``<data-dir>``, uploads in ``<data-dir>/chat-files``; presence, names and rate
  limits in the process. One process only.
- Redis (``redis://host:port/db``): the room logs are the Redis backend's streams, and
  everything else is in Redis too, so any number of instances serve the same chat.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from shared.backends import Backend, from_url
from shared.backends.redis import RedisBackend

from .backend import SqliteBackend
from .db import Database
from .files import Files, FileStore
from .model import ChatStore
from .names import LocalNames, Names
from .presence import MemoryRoster, Roster
from .ratelimit import Limits, LocalLimits
from .redis_conn import RedisConn
from .redis_files import RedisFiles
from .redis_limits import RedisLimits
from .redis_presence import RedisNames, RedisRoster
from .redis_revocations import RedisRevocations
from .redis_store import RedisStore
from .revocations import Revocations, SqliteRevocations
from .settings import ChatSettings
from .store import SqliteStore

__all__ = ["Parts", "is_redis", "redis_parts", "sqlite_parts"]


@dataclass(slots=True)
class Parts:
    backend: Backend
    store: ChatStore
    files: Files
    roster: Roster
    names: Names
    limits: Limits
    revocations: Revocations
    db: Database | None = None


def is_redis(backend_url: str | None) -> bool:
    """``redis://`` / ``rediss://`` / ``redis+sentinel://``: the Redis store; ``None`` or
    ``memory://``: SQLite."""
    scheme = urlsplit(backend_url or "memory://").scheme
    if scheme not in ("memory", "redis", "rediss", "redis+sentinel", "rediss+sentinel"):
        raise ValueError(f"unknown backend URL {backend_url!r} for the chat: use memory:// (SQLite) or redis://")
    return scheme != "memory"


def sqlite_parts(data_dir: Path, settings: ChatSettings, backend: SqliteBackend | None = None) -> Parts:
    backend = backend or SqliteBackend(Database(data_dir / "chat.sqlite3"))
    roster = MemoryRoster()
    return Parts(
        backend=backend,
        store=SqliteStore(backend.db, backend, settings, data_dir / "chat-secret.key"),
        files=FileStore(data_dir / "chat-files", settings.max_file_bytes),
        roster=roster,
        names=LocalNames(settings.name_ttl, roster.is_present),
        limits=LocalLimits(settings.typing_interval),
        revocations=SqliteRevocations(backend.db),
        db=backend.db,
    )


def redis_parts(url: str, settings: ChatSettings) -> Parts:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name == "maxlen" for name, _ in query):
        query.append(("maxlen", str(settings.redis_retention)))
    backend = from_url(urlunsplit(parts._replace(query=urlencode(query))))
    assert isinstance(backend, RedisBackend)  # the URL is redis:// (is_redis)
    conn = RedisConn(backend.url, backend.prefix + "chat:")
    return Parts(
        backend=backend,
        store=RedisStore(conn, backend, settings),
        files=RedisFiles(conn, settings.max_file_bytes, pending_ttl=settings.pending_upload_ttl),
        roster=RedisRoster(conn, settings.presence_ttl),
        names=RedisNames(conn, settings.name_ttl),
        limits=RedisLimits(conn, settings.typing_interval),
        revocations=RedisRevocations(conn),
    )
