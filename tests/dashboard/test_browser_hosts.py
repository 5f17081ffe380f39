"""A real Chromium switching hosts: a page on instance 1 shows host h2 (sampled by instance 2),
acts on one of h2's processes after confirming, and says so when h2 goes away."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.dashboard.browser_helpers import frames, log_in, pick
from tests.dashboard.host_helpers import instance, live
from tests.rig import RedisServer, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.redis]


def test_the_page_switches_to_another_host_and_acts_there(
    page: Page, redis_server: RedisServer, tmp_path: Path
) -> None:
    proc = subprocess.Popen(["sleep", "300"])
    # Different intervals, so the page shows which host's settings and frames it has.
    with (
        instance(redis_server, tmp_path / "one", "h1", interval=1.5, confirm_timeout=20) as one,
        instance(redis_server, tmp_path / "two", "h2", interval=0.5, confirm_timeout=20) as two,
    ):
        try:
            wait_until(lambda: live(one) == {"h1", "h2"}, what="both hosts")
            log_in(page, one.url)
            select = page.locator("#host-select")
            expect(select).to_have_value("h1")
            expect(select.locator("option")).to_have_text(["h1 · this server", "h2"])
            expect(page.locator("#host-count")).to_have_text("2 hosts live")
            expect(page.locator("#interval-label")).to_have_text("every 1.5 s")

            select.select_option("h2")
            assert page.url.endswith("/dashboard/?host=h2")
            expect(page.locator("#interval-label")).to_have_text("every 0.5 s")
            expect(page.locator("body")).to_have_attribute("data-host", "h2")
            wait_until(lambda: frames(page) >= 4, what="h2's frames")
            expect(page.locator("#state")).to_have_text("open")
            chart = page.locator("#chart-cpu .chart")
            wait_until(lambda: int(chart.get_attribute("data-points") or 0) >= 4, what="h2's history in the chart")
            expect(page.locator("#tile-cpu .value")).not_to_have_text("\u2013")  # the placeholder dash
            page.screenshot(path="/tmp/dashboard-hosts.png")

            # Act on h2 from the page on instance 1: instance 2 runs it, after this page said yes.
            pick(page, proc.pid)
            page.click("#selection button[data-action=terminate]")
            expect(page.locator("#confirm")).to_be_visible()
            page.click("#confirm-yes")
            assert proc.wait(10) == -15
            expect(page.locator("#cmd-status")).to_contain_text(f"terminate PID {proc.pid} on h2: sent SIGTERM")
            expect(page.locator("#audit li").first).to_contain_text(f"terminate PID {proc.pid} sleep")
            row = httpx.get(two.url + "/dashboard/audit", timeout=10).json()[0]
            assert row["action"] == "terminate"
            assert row["target"].startswith(f"PID {proc.pid} sleep")

            # Back (the browser's Back button): h1 again, with nothing of h2 left selected.
            page.go_back()
            expect(select).to_have_value("h1")
            expect(page.locator("#interval-label")).to_have_text("every 1.5 s")
            expect(page.locator("#selection")).to_have_attribute("data-has", "no")

            # h2 goes away while on screen: marked gone, the last state kept.
            select.select_option("h2")
            expect(page.locator("#interval-label")).to_have_text("every 0.5 s")
            two.stop()
            expect(page.locator("#host-banner")).to_be_visible(timeout=15_000)
            expect(page.locator("#host-banner")).to_contain_text("Host h2 is gone: its dashboard stopped at ")
            expect(select.locator("option")).to_have_text(["h1 · this server", "h2 · gone"])
            expect(page.locator("#host-count")).to_have_text("1 host live")
            page.screenshot(path="/tmp/dashboard-host-gone.png")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
