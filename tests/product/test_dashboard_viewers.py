"""Issue 13.5: 500 dashboard viewers connecting at once to the instance that does not own the
host (two ``python -m showcase`` on one real redis-server): every one gets 200, the host's state
first, then live frames; none gets 503 while Redis is healthy."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import httpx
import pytest

from tests.product.rig import Product, open_streams, wait_body
from tests.rig import RedisServer, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

VIEWERS = 500


def hosts(p: Product) -> dict:  # type: ignore[type-arg]
    found: dict = httpx.get(p.url + "/dashboard/hosts", timeout=5).json()  # type: ignore[type-arg]
    return found


async def test_500_viewers_at_once_on_the_instance_that_does_not_own_the_host(tmp_path: Path) -> None:
    with RedisServer().running() as redis:
        products = [Product(tmp_path / f"i{i}", "--backend", redis.url) for i in range(2)]
        try:
            for p in products:
                p.start()
            wait_until(lambda: all(hosts(p)["hosts"][0]["instances"] == 2 for p in products), what="both instances")
            owner = hosts(products[0])["hosts"][0]["owner"]
            (other,) = [p for p in products if hosts(p)["instance"] != owner]
            name = hosts(other)["hosts"][0]["name"]

            # All at once: no client-side pacing, as a page reload by a whole office would be.
            streams = await open_streams(other.port, [(f"/dashboard/events?host={name}", {})] * VIEWERS, VIEWERS)
            statuses = collections.Counter(s.status for s in streams)
            bad = [s.text()[:300] for s in streams if s.status != 200][:3]
            assert statuses == {200: VIEWERS}, (statuses, bad)
            await asyncio.gather(*(wait_body(s, b"event: snapshot", 20) for s in streams))
            # ...then the owner's live frames, through Redis, on every one of them.
            await asyncio.gather(*(wait_body(s, b"event: metrics", 20) for s in streams))
            for s in streams[:20]:
                kinds = [e for e, _, _ in s.events()]
                assert kinds.index("snapshot") < kinds.index("metrics"), kinds[:6]
            await asyncio.gather(*(s.close() for s in streams))
            for p in products:
                assert "Traceback" not in p.output(), p.output()[-3000:]
        finally:
            for p in products:
                p.stop()
