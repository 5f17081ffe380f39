"""`python -m showcase --backend redis+sentinel://...` as users run it, through a failover.

A master, a replica and three sentinels (tests/sentinel_rig.py). The master is killed while a
`/basics/` reader and a `/dashboard/` viewer are open: `/readyz` says 503 until the sentinels have
promoted the replica, then 200; both readers carry on (the ticker's ids in order, none twice); the
log says what happened in a few lines and holds no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
import pytest

from shared.client import Backoff, EventStream
from tests.rig import until
from tests.sentinel_rig import SentinelSet

from .rig import Product

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.mark.timeout(90)
async def test_showcase_rides_a_sentinel_failover(tmp_path: Path) -> None:
    sentinels = SentinelSet(tmp_path / "redis")
    with sentinels.running():
        product = Product(tmp_path / "data", "--backend", sentinels.url)
        product.start(ready_path="/readyz")
        try:
            ticks: list[str] = []
            metrics: list[float] = []

            async def read(path: str, seen: list[object], event: str) -> None:
                async with EventStream(product.url + path, backoff=Backoff(retry=0.2)) as events:
                    async for ev in events:
                        if ev.event == event:
                            seen.append(ev.id if event == "tick" else time.monotonic())

            readers = [
                asyncio.create_task(read("/basics/events", ticks, "tick")),  # type: ignore[arg-type]
                asyncio.create_task(read("/dashboard/events", metrics, "metrics")),  # type: ignore[arg-type]
            ]
            async with httpx.AsyncClient(base_url=product.url, timeout=5) as c:
                assert (await c.post("/basics/interval", json={"seconds": 0.25})).status_code == 200
                await until(lambda: len(ticks) >= 3 and bool(metrics), 15, "both streams")
                killed = time.monotonic()
                sentinels.master.kill()
                statuses: list[int] = []
                while time.monotonic() - killed < 30:
                    statuses.append((await c.get("/readyz")).status_code)
                    if 503 in statuses and statuses[-1] == 200:
                        break
                    await asyncio.sleep(0.1)
                ready_again = time.monotonic() - killed
                assert 503 in statuses, "/readyz never said not ready during the failover"
                assert statuses[-1] == 200, f"not ready again {ready_again:.1f} s after the kill"
                before = len(ticks)
                with contextlib.suppress(AssertionError):  # the asserts below say which one lagged
                    await until(lambda: len(ticks) >= before + 5 and metrics[-1] > killed + ready_again, 15)
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            assert len(ticks) >= before + 5, "the /basics/ reader did not carry on after the failover"
            assert metrics[-1] > killed + ready_again, "the dashboard viewer got no metrics after the failover"
            assert len(set(ticks)) == len(ticks), "a tick arrived twice"
            assert sentinels.master_port() == sentinels.replica.port
        finally:
            product.stop()
        log = product.output()
        assert "Traceback" not in log, log[-4000:]
        # The sampler says it once when the outage starts and once when it is over.
        assert log.count("dashboard: cannot publish") <= 1, log[-4000:]
        print(f"\nsentinel failover under python -m showcase: ready again {ready_again:.1f} s after the kill")
