"""The sampler through a Redis outage (a restart, a Sentinel failover): it keeps sampling, says so
in one log line (not a traceback a second), and an alert that fired meanwhile is published once
Redis is back."""

from __future__ import annotations

import asyncio
import logging

import pytest

from dashboard.alerts import Rule
from dashboard.sampler import Sampler
from shared import Hub
from shared.backends.redis import RedisBackend
from tests.rig import RedisServer, until

pytestmark = pytest.mark.redis


@pytest.mark.timeout(60)
async def test_an_outage_is_one_warning_and_alerts_are_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    redis = RedisServer().start()
    try:
        hub = Hub(backend=RedisBackend(redis.url))
        async with hub:
            # CPU above -1 % for 1.5 s: fires about 1.5 s after the first pass, during the outage.
            sampler = Sampler(hub, interval=0.25, rules=[Rule("cpu", -1, 1.5)])
            await sampler.start()
            try:
                await until(lambda: sampler.seq >= 1, 10, "a first pass")
                caplog.clear()
                with caplog.at_level(logging.WARNING):
                    redis.kill()
                    passes = sampler.seq
                    await asyncio.sleep(2.5)
                    assert sampler.seq >= passes + 5, "sampling stopped during the outage"
                    assert not sampler.recent_alerts, "the alert cannot have been published yet"
                    redis.start()  # the same port, empty
                    await until(lambda: bool(sampler.recent_alerts), 15, "the alert after the outage")
                    await until(
                        lambda: any("publishing metrics again" in r.getMessage() for r in caplog.records),
                        10,
                        "the line saying the outage is over",
                    )
            finally:
                await sampler.stop()
        records = [r for r in caplog.records if r.name == "dashboard.sampler"]
        assert not [r for r in records if r.exc_info], "a traceback was logged for an expected outage"
        assert [r.levelname for r in records] == ["WARNING", "WARNING"], [r.getMessage() for r in records]
        assert "unavailable" in records[0].getMessage()
        alerts = list(sampler.recent_alerts)
        assert [a["state"] for a in alerts] == ["firing"], alerts  # once, not once per retry
        assert alerts[0]["event_id"]
    finally:
        redis.stop()
