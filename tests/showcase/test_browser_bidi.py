"""A real Chromium on /bidi/: the browser itself is a client the server asks (session() in sse.js)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from showcase import bidi
from showcase.app import create_index_app
from tests.rig import LiveServer
from tests.showcase.browser_bidi_helpers import ask, open_page

pytestmark = pytest.mark.browser


@pytest.fixture
def server() -> Iterator[LiveServer]:
    with LiveServer(lambda: bidi.create_app()) as srv:
        yield srv


def test_a_request_from_another_page_is_answered_here_and_the_answer_shows_there(
    page: Page, new_context: Callable[..., BrowserContext], server: LiveServer
) -> None:
    me = open_page(page, server)
    asker = new_context().new_page()
    other = open_page(asker, server)
    assert other != me

    ask(asker, me, "<img src=x onerror=alert(1)> count these words")
    card = page.locator(".request")
    expect(card).to_have_count(1)
    expect(card.locator(".method")).to_have_text("analyze")
    # Request text is shown as text, never parsed as HTML.
    expect(card.locator(".params")).to_contain_text('"message": "<img src=x onerror=alert(1)> count these words"')
    expect(card.locator("img")).to_have_count(0)
    expect(card.locator(".left")).to_have_text(re.compile(r"^\d+\.\d s left$"))  # the countdown
    expect(asker.locator(".result").first.locator(".took")).to_have_text("waiting…")

    card.locator("textarea").fill('{"words": 5, "verdict": "fine"}')
    card.locator(".reply").click()
    expect(card).to_have_class(re.compile(r"\banswered\b"))
    expect(card.locator(".status")).to_have_text("answered · delivered to the waiter")

    result = asker.locator(".result").first
    expect(result).to_have_class(re.compile(r"\bok\b"))
    expect(result.locator(".body")).to_have_text('{\n  "words": 5,\n  "verdict": "fine"\n}')
    expect(result.locator(".took")).to_contain_text("round trip")

    # Rejecting answers with a JSON-RPC error, shown as such on the asking page.
    ask(asker, me, "no thanks")
    expect(page.locator(".request")).to_have_count(2)
    page.locator(".request").first.locator(".reject").click()
    rejected = asker.locator(".result").first
    expect(rejected).to_have_class(re.compile(r"\berror\b"))
    expect(rejected.locator(".body")).to_have_text("error -32001: rejected by the person at the page")
    expect(rejected.locator(".took")).to_contain_text("HTTP 502")


def test_an_unanswered_request_times_out_on_both_pages(
    page: Page, new_context: Callable[..., BrowserContext], server: LiveServer
) -> None:
    me = open_page(page, server)
    asker = new_context().new_page()
    open_page(asker, server)
    ask(asker, me, "too slow", timeout="1")
    card = page.locator(".request")
    expect(card).to_have_count(1)
    expect(card.locator(".status")).to_have_text("cancelled by the server: timeout", timeout=10_000)
    expect(card.locator(".reply")).to_be_hidden()
    expect(asker.locator(".result").first.locator(".took")).to_contain_text("HTTP 504")


def test_reloading_keeps_the_client_id_and_gets_the_pending_request_again(
    page: Page, new_context: Callable[..., BrowserContext], server: LiveServer
) -> None:
    me = open_page(page, server)
    asker = new_context().new_page()
    open_page(asker, server)
    ask(asker, me, "answer me after a reload")
    expect(page.locator(".request")).to_have_count(1)

    page.reload()  # the session (id + token) is kept in sessionStorage: a clean takeover
    assert open_page(page, server) == me
    card = page.locator(".request")
    expect(card).to_have_count(1)  # re-delivered from the server's pending table
    expect(card.locator(".params")).to_contain_text("answer me after a reload")
    card.locator("textarea").fill("still here")
    card.locator(".reply").click()
    expect(asker.locator(".result").first.locator(".body")).to_have_text("still here")


def test_the_index_compares_every_demo_and_links_to_it(page: Page) -> None:
    with LiveServer(create_index_app) as srv:
        page.goto(srv.url + "/")
        rows = page.locator("table.patterns tbody tr")
        expect(rows).to_have_count(5)
        for path in ("/basics/", "/bidi/", "/chat/", "/dashboard/", "/exec/"):
            expect(rows.locator(f'th a[href="{path}"]:not(.wire-link)')).to_have_count(1)
        expect(page.locator(".cli pre")).to_contain_text(["curl -N", "sse listen", "sse respond", "sse trigger"])
        # Styled by the shared base.css (its light theme: Playwright's default scheme), not the
        # browser's defaults.
        expect(page.locator("body")).to_have_css("background-color", "rgb(246, 248, 250)")
