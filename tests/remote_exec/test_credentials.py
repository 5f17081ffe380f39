"""One contract for where viewer tokens and sessions are kept: SQLite (one instance) and Redis
(several; a real redis-server). Revoked and expired ones are refused the same way by both."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from remote_exec.auth import Auth
from remote_exec.credentials import Credentials, Session, SqliteCredentials, ViewerToken
from remote_exec.redis_conn import RedisConn
from remote_exec.redis_credentials import RedisCredentials
from remote_exec.store import Store
from tests.rig import RedisServer

OPERATOR = "operator-token-for-tests-0123456789"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer().running() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def creds(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Credentials]:
    if request.param == "sqlite":
        store = Store(tmp_path / "exec.sqlite3")
        store.open()
        yield SqliteCredentials(store)
        store.close()
        return
    server: RedisServer = request.getfixturevalue("redis")
    conn = RedisConn(server.url, f"t{time.monotonic_ns()}:")  # a prefix of its own per test
    yield RedisCredentials(conn)
    await conn.close()


def _token(token_id: str, token_hash: str, ttl: float = 60.0, run_id: str | None = None) -> ViewerToken:
    now = time.time()
    return ViewerToken(token_id, token_hash, run_id, "guest", "ada", now, now + ttl)


async def test_a_token_is_found_by_hash_and_by_id_until_revoked(creds: Credentials) -> None:
    await creds.add_token(_token("t1", "h1", run_id="r1"))
    await creds.add_token(_token("t2", "h2"))
    found = await creds.find_token("h1")
    assert found is not None
    assert (found.id, found.run_id, found.label, found.created_by, found.revoked) == ("t1", "r1", "guest", "ada", False)
    assert (await creds.get_token("t1")) == found
    assert await creds.find_token("nope") is None
    assert [t.id for t in await creds.list_tokens()] == ["t2", "t1"]  # newest first
    assert "token_hash" not in (await creds.list_tokens())[0].public()
    assert await creds.revoke_token("t1") is True
    assert await creds.revoke_token("t1") is False  # not usable any more
    assert await creds.revoke_token("never") is False
    assert await creds.find_token("h1") is None
    assert await creds.get_token("t1") is None
    listed = {t.id: t for t in await creds.list_tokens()}
    assert listed["t1"].revoked is True  # still listed, as revoked
    assert listed["t2"].revoked is False


async def test_an_expired_token_and_session_are_refused(creds: Credentials) -> None:
    await creds.add_token(_token("t1", "h1", ttl=0.3))
    now = time.time()
    await creds.add_session(Session("s1", "viewer", "viewer:guest", None, "viewer:t1", now + 0.3))
    assert await creds.find_token("h1") is not None
    assert await creds.get_session("s1") is not None
    await asyncio.sleep(0.5)
    assert await creds.find_token("h1") is None
    assert await creds.get_token("t1") is None
    assert await creds.get_session("s1") is None


async def test_sessions_and_the_auth_on_top(creds: Credentials) -> None:
    auth = Auth(creds, OPERATOR)
    token_id, token, expires_at = await auth.mint_viewer(run_id=None, ttl_s=60, label="guest", created_by="ada")
    viewer = await auth.check_token(token)
    assert viewer is not None
    assert (viewer.role, viewer.name, viewer.grants) == ("viewer", "viewer:guest", (f"viewer:{token_id}",))
    assert viewer.expires_at == pytest.approx(expires_at)
    _, sid = await auth.login(token, None)
    session = await auth.check_session(sid)
    assert session is not None
    assert session.role == "viewer"
    assert f"viewer:{token_id}" in session.grants
    op, op_sid = await auth.login(OPERATOR, "ada")
    again = await auth.check_session(op_sid)
    assert again is not None
    assert (again.role, again.name, again.grants) == (op.role, "ada", (f"session:{_sha(op_sid)}",))
    # Revoking the token ends its sessions too; logging out ends one session.
    assert await creds.revoke_token(token_id)
    assert await auth.check_token(token) is None
    assert await auth.check_session(sid) is None
    assert await auth.logout(op_sid) is not None
    assert await auth.check_session(op_sid) is None
    assert await auth.check_token("v_not-a-token") is None
    with pytest.raises(Exception, match="wrong or expired token"):
        await auth.login(token, None)
