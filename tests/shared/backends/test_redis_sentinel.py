"""A failover to a replica that missed the tail (issue 19): an id only the old master had is reset,
not a silent gap.

Redis replication is asynchronous: the master acknowledges a write before its replica has it.
The replica is made to miss one deterministically: ``CLIENT PAUSE WRITE`` on it holds the
replication stream unapplied, and when the master dies the held part is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from shared.backends import BackendUnavailable, UnknownEventId, from_url
from shared.backends.redis import RedisBackend
from tests.sentinel_rig import SentinelSet

pytestmark = [pytest.mark.redis, pytest.mark.slow]
T = TypeVar("T")


async def retry(call: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """``call()`` until Redis answers (it is unavailable while the sentinels fail over)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.timeout(60)
async def test_an_id_the_new_master_never_got_is_reset_and_the_replicated_ones_resume(tmp_path: Path) -> None:
    sentinels = SentinelSet(tmp_path)
    with sentinels.running():
        backend = from_url(f"{sentinels.url}?prefix=tail:")
        assert isinstance(backend, RedisBackend)
        await backend.start()
        try:
            kept = await backend.append("room", "kept")
            with redis.Redis(port=sentinels.master.port) as master, redis.Redis(port=sentinels.replica.port) as replica:
                master.set("test:replicated", "1")
                assert master.wait(1, 2000) == 1  # "kept" is on the replica
                replica.client_pause(3000, all=False)
                lost = await backend.append("room", "lost")  # acknowledged by the master only
                sentinels.master.kill()
                sentinels.wait_failover()
                replica.client_unpause()
            assert kept.id is not None
            assert lost.id is not None
            assert lost.id != kept.id
            kept_id, lost_id = kept.id, lost.id
            assert await retry(lambda: backend.read_after("room", kept_id, 10)) == []  # nothing after it was lost
            with pytest.raises(UnknownEventId) as before:
                await backend.read_after("room", lost_id, 10)
            assert before.value.reason == "unknown"  # from the future: the epoch survived replication
            after = await retry(lambda: backend.append("room", "after"))
            assert after.id is not None
            assert after.id.split(".")[1] == kept_id.split(".")[1]
            assert [e.data for e in await backend.read_after("room", kept_id, 10)] == ["after"]
            with pytest.raises(UnknownEventId) as later:
                await backend.read_after("room", lost_id, 10)
            assert later.value.reason == "foreign"  # in range now, yet never an entry here
        finally:
            await backend.close()


@pytest.mark.timeout(60)
async def test_rediss_sentinel_speaks_tls_to_the_sentinels_and_the_master_through_a_failover(tmp_path: Path) -> None:
    """``rediss+sentinel://``: servers and sentinels that accept only TLS; the backend finds the
    master, writes, follows the failover, and carries on."""
    sentinels = SentinelSet(tmp_path, tls=True)
    with sentinels.running():
        with pytest.raises(redis.ConnectionError), redis.Redis(port=sentinels.master.port, socket_timeout=1) as plain:
            plain.ping()  # no plain-text port: what works below went through TLS
        assert sentinels.url.startswith("rediss+sentinel://")
        backend = from_url(sentinels.url)
        assert isinstance(backend, RedisBackend)
        await backend.start()
        try:
            first = await backend.append("room", "before")
            assert first.id is not None
            first_id = first.id
            with sentinels.client(sentinels.master.port) as master:
                master.set("test:replicated", "1")
                assert master.wait(1, 2000) == 1
            sentinels.master.kill()
            sentinels.wait_failover()
            await retry(lambda: backend.append("room", "after"))
            assert [e.data for e in await backend.read_after("room", first_id, 10)] == ["after"]
            assert "sentinel mymaster@" in backend.describe()
        finally:
            await backend.close()
