"""Helpers for /bidi/ in a browser: open a page, ask it from another."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.rig import LiveServer


def open_page(page: Page, server: LiveServer) -> str:
    """Open /bidi/ and return the page's client id once its session is open."""
    page.goto(server.url + "/bidi/")
    expect(page.locator("#state")).to_have_text("open")
    expect(page.locator("#me")).not_to_have_text("…")
    return page.locator("#me").text_content() or ""


def ask(asker: Page, client_id: str, message: str, timeout: str = "30") -> None:
    # The list of clients is refreshed every 2 s (and when the select gets focus).
    expect(asker.locator(f'#target option[value="{client_id}"]')).to_have_count(1)
    asker.select_option("#target", client_id)
    asker.fill("#message", message)
    asker.fill("#timeout", timeout)
    asker.click("#send")
