"""One sampler per process: 50 viewers do not make 50 psutil passes.

In its own module so that no other dashboard server (another module's fixture) samples meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from dashboard import probe
from tests.dashboard.conftest import dashboard_server

probe_psutil: Any = vars(probe)["psutil"]  # the psutil the probe reads processes with (patched below)


async def test_one_sampler_whatever_the_number_of_viewers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    real = probe_psutil.process_iter

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        return real(*args, **kwargs)

    # The probe walks the process list once per pass, and nothing else does.
    monkeypatch.setattr(probe_psutil, "process_iter", counting)
    with dashboard_server(tmp_path, interval=0.25) as srv:
        seen: list[dict[int, float]] = []

        async def viewer(client: httpx.AsyncClient) -> None:
            got: dict[int, float] = {}
            async with aconnect_sse(client, "GET", srv.url + "/dashboard/events") as source:
                async for sse in source.aiter_sse():
                    if sse.event == "metrics":
                        frame = json.loads(sse.data)
                        got[frame["seq"]] = frame["t"]
                        if len(got) == 6:
                            break
            seen.append(got)

        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(timeout=20, limits=limits) as client:
            began = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*(viewer(client) for _ in range(50))), 30)
            elapsed = time.monotonic() - began
        passes = [t for t in calls if began <= t <= began + elapsed]
        assert len(seen) == 50
        assert len(passes) <= elapsed / 0.25 + 3, f"{len(passes)} passes in {elapsed:.2f}s for 50 viewers"
        # Every frame any viewer saw is the one frame of that pass: same seq, same sample time.
        frames: dict[int, set[float]] = {}
        for got in seen:
            assert sorted(got) == list(range(min(got), min(got) + 6)), "consecutive frames, none missed"
            for seq, t in got.items():
                frames.setdefault(seq, set()).add(t)
        assert all(len(ts) == 1 for ts in frames.values())
        assert max(frames) <= len(calls)
        assert srv.app.state.dashboard.sampler.probe.passes == len(calls)
