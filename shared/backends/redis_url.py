"""Where a Redis URL points: one server, or the master a set of Redis Sentinels names (issue 19).

- ``redis://[user:pass@]host:port/db`` (``rediss://`` for TLS): that server.
- ``redis+sentinel://[user:pass@]host:port,host:port/service/db`` (``rediss+sentinel://``): the
  current master of ``service`` as the sentinels at those addresses report it (port 26379 if
  none is given). The user and password are the master's; ``sentinel_username`` and
  ``sentinel_password`` in the query are the sentinels' own, if they require one. Every other
  query parameter goes to redis-py, as for ``redis://``.

Every Redis client of the project builds its pool here (:func:`make_pool`), so after a failover
each of them finds the new master on its next connection: a connection to the old master fails
(refused, or ``READONLY`` once it is back as a replica, which redis-py's sentinel connection turns
into a ``ConnectionError``), and the next one asks the sentinels again. While no sentinel names
a master that is up, connecting fails with ``MasterNotFoundError``, a ``ConnectionError``: callers
treat it as "Redis unavailable" (503, not ready, listeners retry), as they treat a server down.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from redis.asyncio import BlockingConnectionPool, ConnectionPool
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

__all__ = ["REDIS_SCHEMES", "app_options", "is_redis_url", "make_pool", "url_options", "where"]

REDIS_SCHEMES = ("redis", "rediss", "redis+sentinel", "rediss+sentinel")
_SENTINEL_PARAMS = ("sentinel_username", "sentinel_password")
_SENTINEL_PORT = 26379


def is_redis_url(url: str | None) -> bool:
    return bool(url) and urlsplit(str(url)).scheme in REDIS_SCHEMES


def _is_sentinel(url: str) -> bool:
    return urlsplit(url).scheme.endswith("+sentinel")


def _sentinel_parts(url: str) -> tuple[str, list[tuple[str, int]], str, str, dict[str, str]]:
    """(userinfo, sentinel addresses, service, the URL as ``redis://`` for redis-py, sentinel query)."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        if not host or (colon and not port.isdigit()):
            raise ValueError(f"sentinel address {item!r} in {where(url)!r} must be host:port")
        sentinels.append((host.strip("[]"), int(port) if colon else _SENTINEL_PORT))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(f"{where(url)!r} must name the service: redis+sentinel://host:port,host:port/service/db")
    service, db = unquote(path[0]), path[1] if len(path) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"the database in {where(url)!r} must be a number, not {db!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    theirs = [(k, v) for k, v in query if k not in _SENTINEL_PARAMS]
    ours = {k: v for k, v in query if k in _SENTINEL_PARAMS}
    scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
    auth = f"{userinfo}@" if userinfo else ""
    plain = f"{scheme}://{auth}sentinel-managed/{db}?{urlencode(theirs)}"
    return userinfo, sentinels, service, plain, ours


def url_options(url: str) -> dict[str, Any]:
    """redis-py connection options from ``url`` (as ``parse_url``; no host for a sentinel URL)."""
    if not _is_sentinel(url):
        return dict(parse_url(url))
    options = dict(parse_url(_sentinel_parts(url)[3]))
    for name in ("host", "port", "connection_class"):
        options.pop(name, None)
    if urlsplit(url).scheme.startswith("rediss"):
        options["ssl"] = True  # how redis-py's sentinel pool (and the sentinels' clients) take TLS
    return options


def where(url: str) -> str:
    """``url`` without its password, for messages: ``host:port`` or ``sentinel service@h:p,h:p``."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    if _is_sentinel(url):
        service = parts.path.strip("/").split("/")[0]
        return f"sentinel {service}@{hosts}"
    try:
        o = parse_url(url)
    except ValueError:  # not a Redis URL at all: the message is about that
        return hosts
    return str(o.get("path") or f"{o.get('host', '?')}:{o.get('port', 6379)}")


def make_pool(url: str, options: dict[str, Any], *, blocking: bool = True) -> ConnectionPool:
    """A pool for ``url`` with ``options`` (:func:`url_options` merged with the caller's).

    For a sentinel URL it is a sentinel-managed pool of master connections; its sentinel
    clients are closed with it. ``blocking`` waits up to ``options["timeout"]`` for a free
    connection (``BlockingConnectionPool``), else ``max_connections`` more raise at once.
    """
    if not _is_sentinel(url):
        return BlockingConnectionPool(**options) if blocking else ConnectionPool(**options)
    _, sentinels, service, _, ours = _sentinel_parts(url)
    # The sentinels are asked on every new connection: the same short timeouts, and no retries
    # (redis-py's default backoff would make one dead sentinel cost seconds).
    sentinel_kwargs: dict[str, Any] = {k: v for k, v in options.items() if k.startswith(("socket_", "ssl"))}
    sentinel_kwargs.update(protocol=2, retry=Retry(NoBackoff(), 0))
    if "sentinel_username" in ours:
        sentinel_kwargs["username"] = ours["sentinel_username"]
    if "sentinel_password" in ours:
        sentinel_kwargs["password"] = ours["sentinel_password"]
    manager = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    kwargs = dict(options)
    if not blocking:
        kwargs.pop("timeout", None)
    cls = _SentinelBlockingPool if blocking else _SentinelPool
    pool: ConnectionPool = cls(service, manager, **kwargs)  # type: ignore[no-untyped-call]
    return pool


class _SentinelPool(SentinelConnectionPool):
    """redis-py's sentinel pool, which also closes the sentinel clients it was given."""

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


class _SentinelBlockingPool(_SentinelPool, BlockingConnectionPool):
    """The same, waiting for a free connection like ``BlockingConnectionPool`` (redis-py's asyncio
    sentinel has no blocking pool of its own)."""


def app_options(url: str, client_name: str, max_connections: int) -> dict[str, Any]:
    """redis-py settings for an app's own state next to the backend (chat, exec): short timeouts so
    a request fails fast with 503 rather than hang, no retries (a retried script that did run would
    run twice), RESP2, and whatever the URL's query adds."""
    return {
        "max_connections": max_connections,
        "timeout": 1.0,  # waiting for a free pooled connection
        "socket_timeout": 2.0,
        "socket_connect_timeout": 0.5,
        "client_name": client_name,
        **url_options(url),
        "protocol": 2,
        "retry": Retry(NoBackoff(), 0),
    }
