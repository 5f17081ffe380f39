"""A real Chromium on /dashboard/: live numbers and charts, settings, and a confirmed terminate."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.dashboard.browser_helpers import frames, log_in, pick
from tests.dashboard.conftest import TOKEN, dashboard_server
from tests.rig import LiveServer, wait_until

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with dashboard_server(tmp_path_factory.mktemp("dash-browser"), interval=0.5, confirm_timeout=20, rules=None) as srv:
        yield srv


def test_numbers_and_charts_move(page: Page, server: LiveServer) -> None:
    page.goto(server.url + "/dashboard/")
    expect(page.locator("#state")).to_have_text("open")
    wait_until(lambda: frames(page) >= 2, what="frames")
    chart = page.locator("#chart-cpu .chart")
    # The time of the latest frame (HH:MM:SS) changes every second; the uptime tile shows only
    # minutes once the machine has been up an hour, so it is no good for this.
    stamp = page.locator("#last-frame").text_content()
    points = int(chart.get_attribute("data-points") or 0)
    assert points >= 2, "the history filled the chart on connect"
    before = chart.locator("canvas").screenshot()
    wait_until(lambda: frames(page) >= 6, what="more frames")
    page.wait_for_timeout(300)
    assert page.locator("#last-frame").text_content() != stamp
    assert int(chart.get_attribute("data-points") or 0) > points
    assert chart.locator("canvas").screenshot() != before, "the chart was redrawn with new points"
    expect(page.locator("#cores .bar-row")).not_to_have_count(0)
    expect(page.locator("#proc-rows tr")).not_to_have_count(0)
    page.screenshot(path="/tmp/dashboard-view.png", full_page=True)


def test_changing_the_interval_changes_the_cadence(page: Page, tmp_path: Path) -> None:
    with dashboard_server(tmp_path, interval=1.5) as srv:
        log_in(page, srv.url)
        expect(page.locator("#interval-label")).to_have_text("every 1.5 s")
        wait_until(lambda: frames(page) >= 1, what="a frame")
        n0 = frames(page)
        page.wait_for_timeout(3000)
        slow = frames(page) - n0
        page.fill("#interval", "0.25")
        page.click("#apply-interval")
        expect(page.locator("#interval-label")).to_have_text("every 0.25 s")
        n1 = frames(page)
        page.wait_for_timeout(3000)
        fast = frames(page) - n1
        assert slow <= 3
        assert fast >= max(2 * slow, 6), f"{slow} frames in 3 s at 1.5 s, {fast} at 0.25 s"


def test_terminate_from_the_page_after_confirming(page: Page, server: LiveServer) -> None:
    proc = subprocess.Popen(["sleep", "300"])
    try:
        log_in(page, server.url)
        pick(page, proc.pid)
        page.click("#selection button[data-action=terminate]")
        dialog = page.locator("#confirm")
        expect(dialog).to_be_visible()
        expect(page.locator("#confirm-question")).to_contain_text(f"Terminate PID {proc.pid} “sleep” started ")
        expect(page.locator("#confirm-question")).to_contain_text("by root?")
        expect(page.locator("#confirm-cmdline")).to_have_text("sleep 300")
        page.screenshot(path="/tmp/dashboard-confirm.png")
        assert proc.poll() is None, "nothing happens before the yes"
        page.click("#confirm-yes")
        assert proc.wait(10) == -15
        expect(page.locator("#cmd-status")).to_contain_text("sent SIGTERM; the process has ended")
        entry = page.locator("#audit li").first
        expect(entry).to_contain_text(f"terminate PID {proc.pid} sleep (root")
        expect(entry.locator(".tag")).to_have_text("succeeded")
        expect(page.locator("#activity li").first).to_contain_text("succeeded")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def test_refusing_the_confirmation_leaves_it_running(page: Page, server: LiveServer) -> None:
    proc = subprocess.Popen(["sleep", "300"])
    try:
        log_in(page, server.url)
        pick(page, proc.pid)
        page.click("#selection button[data-action=kill]")
        expect(page.locator("#confirm")).to_be_visible()
        page.click("#confirm-no")
        expect(page.locator("#cmd-status")).to_contain_text("not done: declined by the operator")
        expect(page.locator("#audit li").first.locator(".tag")).to_have_text("declined")
        page.wait_for_timeout(300)
        assert proc.poll() is None
        expect(page.locator("#confirm")).to_be_hidden()
    finally:
        proc.kill()
        proc.wait(5)


def test_log_out_and_in_again_then_confirm(page: Page, server: LiveServer) -> None:
    """Issue 14.1: a page session is bound to the login it was opened with. After a log-out and a
    new log-in in the same tab the page's session (same client id) carries the new login, so its
    confirmation is accepted; the audit names the login that asked and confirmed."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        log_in(page, server.url)
        first = {c["name"]: c["value"] for c in page.context.cookies()}["dashboard_control"]
        page.click("#logout")
        expect(page.locator("#control-state")).to_have_text("view only")
        page.click("#login-open")
        page.fill("#login-token", TOKEN)
        page.click("#login-submit")
        expect(page.locator("#control-state")).to_have_text("control enabled")
        expect(page.locator("body")).to_have_attribute("data-session", "ready")
        second = {c["name"]: c["value"] for c in page.context.cookies()}["dashboard_control"]
        assert second != first, "a new login session"
        pick(page, proc.pid)
        page.click("#selection button[data-action=terminate]")
        expect(page.locator("#confirm")).to_be_visible()
        page.click("#confirm-yes")
        assert proc.wait(10) == -15
        expect(page.locator("#cmd-status")).to_contain_text("sent SIGTERM; the process has ended")
        ref = hashlib.sha256(second.encode()).hexdigest()[:12]
        expect(page.locator("#audit li").first).to_contain_text(f"confirmed by login {ref}, page ")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
