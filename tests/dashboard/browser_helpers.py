"""Helpers for the dashboard's browser tests: log in, pick a process, count frames."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.dashboard.conftest import TOKEN


def frames(page: Page) -> int:
    return int(page.locator("#frames").text_content() or 0)


def log_in(page: Page, url: str) -> None:
    page.goto(url + "/dashboard/")
    expect(page.locator("#control-state")).to_have_text("view only")
    expect(page.locator("#selection button[data-action=terminate]")).to_be_disabled()
    page.click("#login-open")
    page.fill("#login-token", "not-the-token")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text("wrong control token")
    page.fill("#login-token", TOKEN)
    page.click("#login-submit")
    expect(page.locator("#control-state")).to_have_text("control enabled")
    expect(page.locator("body")).to_have_attribute("data-session", "ready")


def pick(page: Page, pid: int) -> None:
    page.fill("#proc-filter", "sleep")
    row = page.locator(f"#proc-rows tr[data-pid='{pid}']")
    expect(row).to_have_count(1)
    page.click("#freeze")  # the table stops moving while we pick
    expect(page.locator("#freeze")).to_have_attribute("aria-pressed", "true")
    row.click()
    expect(page.locator("#sel-text")).to_contain_text(f"PID {pid} · sleep")
