"""The login-session stores (issue 14.1): one contract, SQLite and a real redis-server."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from dashboard.redis_sessions import RedisSessions
from dashboard.sessions import LoginSession, LoginSessions, SqliteSessions, session_key
from tests.rig import RedisServer

Make = Callable[..., LoginSessions]


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer().running() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Make]:
    """``make(max_age=, idle=)``: a started store; every one made is closed afterwards."""
    made: list[LoginSessions] = []
    prefix = f"t{time.monotonic_ns()}:"

    def build(**kwargs: float) -> LoginSessions:
        if request.param == "sqlite":
            return SqliteSessions(tmp_path / "logins.sqlite3", **kwargs)
        server: RedisServer = request.getfixturevalue("redis")
        return RedisSessions(server.url, prefix=prefix, **kwargs)

    def make(**kwargs: float) -> LoginSessions:
        store = build(**kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def started(store: LoginSessions) -> LoginSessions:
    await store.start()
    return store


def new(secret: str, *, fp: str = "fp", ago: float = 0.0) -> LoginSession:
    at = time.time() - ago
    return LoginSession(session_key(secret), fp, at, at, "127.0.0.1")


async def test_add_get_revoke(make: Make) -> None:
    store = await started(make())
    one, two = new("secret-one"), new("secret-two")
    await store.add(one)
    await store.add(two)
    got = await store.get(one.key)
    assert got is not None
    assert (got.key, got.token_fp, got.address) == (one.key, "fp", "127.0.0.1")
    assert got.ref == one.key[:12]
    assert await store.get(session_key("never-issued")) is None
    assert await store.revoke(one.key) is True
    assert await store.get(one.key) is None, "revoked: gone at once"
    assert await store.revoke(one.key) is False
    assert await store.get(two.key) is not None, "another session is untouched"


async def test_a_second_store_on_the_same_place_sees_adds_and_revokes_at_once(make: Make) -> None:
    """Two instances (Redis) or a restart (SQLite): the same sessions, revoked for both."""
    first, second = await started(make()), await started(make())
    s = new("shared-secret")
    await first.add(s)
    assert await second.get(s.key) is not None
    await second.revoke(s.key)
    assert await first.get(s.key) is None


async def test_absolute_expiry(make: Make) -> None:
    store = await started(make(max_age=1.0, idle=60.0))
    fresh, old = new("fresh"), new("old", ago=0.5)
    await store.add(fresh)
    await store.add(old)
    assert await store.get(old.key) is not None
    await asyncio.sleep(0.7)  # old is 1.2 s old now: past max_age, however recently it was used
    assert await store.get(old.key) is None
    assert await store.get(fresh.key) is not None
    await asyncio.sleep(0.5)
    assert await store.get(fresh.key) is None, "use does not extend max_age"


async def test_idle_expiry_restarted_by_use(make: Make) -> None:
    store = await started(make(max_age=60.0, idle=1.0))
    used, unused = new("used"), new("unused")
    await store.add(used)
    await store.add(unused)
    for _ in range(4):  # 1.6 s in all, never 1 s without a use
        await asyncio.sleep(0.4)
        assert await store.get(used.key) is not None
    assert await store.get(unused.key) is None


def test_the_sqlite_file_is_private(tmp_path: Path) -> None:
    async def run() -> None:
        store = SqliteSessions(tmp_path / "new" / "logins.sqlite3")
        await store.start()
        await store.add(new("x"))
        await store.close()

    asyncio.run(run())
    for path in [tmp_path / "new" / "logins.sqlite3", *(tmp_path / "new").glob("logins.sqlite3-*")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


async def test_an_unreachable_redis_is_503_not_logged_in() -> None:
    """Fail closed, and fast: a port nobody listens on."""
    from litestar.exceptions import ServiceUnavailableException

    from tests.rig import free_port

    store = RedisSessions(f"redis://127.0.0.1:{free_port()}/0")
    try:
        began = time.monotonic()
        with pytest.raises(ServiceUnavailableException) as info:
            await store.get(session_key("anything"))
        assert time.monotonic() - began < 3
        assert info.value.status_code == 503
        assert "Redis is unreachable" in info.value.detail
        assert info.value.headers == {"Retry-After": "2"}
    finally:
        await store.close()
