"""Backends for the hub, chosen by URL: ``memory://`` (default), ``redis://host:port/db`` or
``redis+sentinel://host:port,host:port/service/db``."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from .base import Backend, BackendUnavailable, Entry, ResetReason, UnknownEventId
from .memory import MemoryBackend

__all__ = ["Backend", "BackendUnavailable", "Entry", "MemoryBackend", "ResetReason", "UnknownEventId", "from_url"]


def from_url(url: str | None) -> Backend:
    """``memory://`` or ``memory://?max_events=N``; other schemes are imported lazily."""
    url = url or "memory://"
    parts = urlsplit(url)
    if parts.scheme == "memory":
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        kwargs: dict[str, float | int] = {}
        if "max_events" in query:
            kwargs["max_events"] = int(query["max_events"])
        if "max_age" in query:
            kwargs["max_age"] = float(query["max_age"])
        return MemoryBackend(**kwargs)  # type: ignore[arg-type]
    if parts.scheme in ("redis", "rediss", "redis+sentinel", "rediss+sentinel"):
        try:
            from .redis import RedisBackend  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ValueError(f"backend {url!r} needs the Redis backend: pip install redis ({exc})") from exc
        return RedisBackend.from_url(url)  # type: ignore[no-any-return,unused-ignore]
    raise ValueError(
        f"unknown backend URL {url!r}: use memory://, redis://host:port/db or "
        "redis+sentinel://host:port,host:port/service/db"
    )
