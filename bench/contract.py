"""What every bench server publishes, whatever serves it (ours, the naive baseline, the peers in
:mod:`bench.peers`): the same payloads on the same schedule, so only the serving differs.

An event's data is JSON ``{"seq": int, "t": float, "pad": "x..."}`` of about ``size`` bytes;
``t`` is when the schedule said the event was due (or when it was made, unpaced).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import psutil

TOPIC = "bench"
BATCH = 64  # events published between yields to the loop, unpaced


def due(i: int, began_wall: float, rate: float | None) -> float | None:
    """When event ``i`` is due by the schedule: its ``t``, so a publisher that falls behind (the
    server is too busy) shows as latency instead of hiding it (coordinated omission)."""
    return None if rate is None else began_wall + i / rate


async def pace(i: int, began: float, rate: float | None) -> None:
    """Wait until event ``i + 1`` is due (or yield now and then, unpaced)."""
    if rate is None:
        if i % BATCH == BATCH - 1:
            await asyncio.sleep(0)
        return
    delay = began + (i + 1) / rate - time.monotonic()
    await asyncio.sleep(max(0.0, delay))


def payload(seq: int, size: int, t: float | None = None) -> dict[str, Any]:
    base = {"seq": seq, "t": time.time() if t is None else t, "pad": ""}
    pad = max(0, size - len(json.dumps(base)))
    base["pad"] = "x" * pad
    return base


def process_stats(subscribers: int, seq: int) -> dict[str, Any]:
    """``GET /stats``: open streams, this process's RSS and CPU seconds, the last seq published."""
    proc = psutil.Process(os.getpid())
    cpu = proc.cpu_times()
    return {"subscribers": subscribers, "rss": proc.memory_info().rss, "cpu_s": cpu.user + cpu.system, "seq": seq}
