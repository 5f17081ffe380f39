"""The probe reads real psutil data; the history stays five minutes long whatever the interval."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from dashboard.probe import Probe
from dashboard.sampler import Sampler, check_interval
from shared import Hub


def test_probe_frame_has_everything_the_page_shows() -> None:
    probe = Probe(process_limit=5)
    probe.sample()
    time.sleep(0.05)
    f = probe.sample()
    assert 0 <= f["cpu"]["total"] <= 100
    assert len(f["cpu"]["per_core"]) == f["cpu"]["count"] >= 1
    assert len(f["load"]) == 3
    assert 0 < f["mem"]["used"] <= f["mem"]["total"]
    assert f["disks"], "at least the root file system"
    assert all(r >= 0 for d in f["net_io"].values() for r in d.values())
    assert f["uptime_s"] > 0
    assert isinstance(f["temps"], list)  # empty where the machine has no sensors
    assert len(f["procs"]) == 5 < f["procs_total"]
    p = f["procs"][0]
    assert set(p) == {"pid", "name", "user", "cpu", "mem", "rss", "status", "start"}
    # busiest first
    assert [r["cpu"] for r in f["procs"]] == sorted((r["cpu"] for r in f["procs"]), reverse=True)


def test_probe_counts_cpu_of_a_busy_process() -> None:
    probe = Probe(process_limit=10_000)
    probe.sample()
    wall0, cpu0 = time.monotonic(), time.process_time()
    end = cpu0 + 0.3
    while time.process_time() < end:
        pass
    me = next(r for r in probe.sample()["procs"] if r["pid"] == os.getpid())
    expected = 100 * (time.process_time() - cpu0) / (time.monotonic() - wall0)
    # However loaded the machine is, the probe sees what we measured ourselves.
    assert expected > 5
    assert abs(me["cpu"] - expected) < max(10, 0.3 * expected), (me["cpu"], expected)


def test_history_keeps_the_time_window_at_any_interval() -> None:
    sampler = Sampler(Hub(), interval=0.25, history_seconds=300)
    for i in range(2000):  # 500 s of frames at 0.25 s
        sampler._remember({"t": i * 0.25})
    assert len(sampler.history) == 1201
    assert sampler.history[-1]["t"] - sampler.history[0]["t"] == 300
    for i in range(400):  # then 400 s at 1 s: the window is time, not a count
        sampler._remember({"t": 500 + i})
    assert len(sampler.history) == 301


@pytest.mark.parametrize("bad", [0.24, 60.5, -1, float("nan"), True, "1"])
def test_interval_range(bad: object) -> None:
    with pytest.raises(ValueError, match=r"0\.25"):
        check_interval(bad)
    assert check_interval(60) == 60.0


async def test_a_new_interval_applies_at_once_and_pause_stops_psutil() -> None:
    async with Hub() as hub:
        sampler = Sampler(hub, interval=60)
        await sampler.start()
        try:
            assert sampler.probe.passes == 1  # the priming pass
            sampler.set_interval(0.25)  # not after the old 60 s
            for _ in range(100):
                if sampler.seq >= 2:
                    break
                await asyncio.sleep(0.05)
            assert sampler.seq >= 2
            sampler.set_paused(True)
            await asyncio.sleep(0.5)  # a pass already under way may finish
            passes = sampler.probe.passes
            await asyncio.sleep(0.8)
            assert sampler.probe.passes == passes, "paused: no psutil pass at all"
            seq = sampler.seq
            sampler.set_paused(False)
            for _ in range(100):
                if sampler.seq > seq:
                    break
                await asyncio.sleep(0.05)
            assert sampler.probe.passes == passes + 1 + (sampler.seq - seq), "primed again, then frames"
        finally:
            await sampler.stop()
