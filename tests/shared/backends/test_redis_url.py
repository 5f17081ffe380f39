"""Sentinel URLs (issue 19), parsed without a server: what each part of the URL becomes."""

from __future__ import annotations

import pytest

from shared.backends import from_url
from shared.backends.redis import RedisBackend
from shared.backends.redis_url import make_pool, url_options, where

URL = "redis+sentinel://:secret@10.0.0.1:26380,10.0.0.2,[::1]:26381/mymaster/3?socket_timeout=0.3&sentinel_password=sp"


def test_sentinel_url_names_the_sentinels_the_service_and_the_masters_options() -> None:
    options = url_options(URL)
    assert options == {"password": "secret", "db": 3, "socket_timeout": 0.3}
    pool = make_pool(URL, {**options, "max_connections": 4, "timeout": 1.0})
    assert pool.service_name == "mymaster"  # type: ignore[attr-defined]
    assert pool.max_connections == 4
    sentinels = pool.sentinel_manager.sentinels  # type: ignore[attr-defined]
    addresses = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"]) for s in sentinels
    ]
    assert addresses == [("10.0.0.1", 26380), ("10.0.0.2", 26379), ("::1", 26381)]
    # The sentinels' own password, and the master's never sent to them.
    assert {s.connection_pool.connection_kwargs["password"] for s in sentinels} == {"sp"}
    assert where(URL) == "sentinel mymaster@10.0.0.1:26380,10.0.0.2,[::1]:26381"  # no password in messages


def test_backend_from_a_sentinel_url_keeps_its_own_options() -> None:
    b = from_url("redis+sentinel://127.0.0.1:26379/mymaster?maxlen=50&prefix=app:")
    assert isinstance(b, RedisBackend)
    assert (b.maxlen, b.prefix) == (50, "app:")
    assert b.describe() == "redis at sentinel mymaster@127.0.0.1:26379"
    assert url_options("rediss+sentinel://h/m")["ssl"] is True


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://127.0.0.1:26379", "must name the service"),
        ("redis+sentinel://127.0.0.1:26379/m/0/x", "must name the service"),
        ("redis+sentinel://127.0.0.1:26379/m/zero", "must be a number"),
        ("redis+sentinel://127.0.0.1:port/m", "must be host:port"),
    ],
)
def test_bad_sentinel_urls_are_refused_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_url(url)
