"""The toy app of examples/ in a real Chromium: newcomers copy it, so it must work as it reads (a
vote in one window shows in the other at once) and say the server's refusal in its own words."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import BrowserContext, expect

from examples.toy.app import create_app
from tests.rig import LiveServer

from .rig import Console, overflow, shot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(factory=create_app) as srv:
        yield srv


def test_a_vote_in_one_window_shows_in_the_other(
    server: LiveServer, new_context: Callable[..., BrowserContext]
) -> None:
    console = Console()
    one = console.watch(new_context().new_page())
    other = console.watch(new_context(viewport={"width": 360, "height": 740}).new_page())
    for page in (one, other):
        page.goto(f"{server.url}/poll/")
        expect(page.locator("#state")).to_have_text("open")
    row = "#options li:has(.option:text-is('SSE'))"
    before = int(other.locator(f"{row} .count").inner_text())
    one.get_by_role("button", name="Vote for SSE").click()
    expect(other.locator(f"{row} .count")).to_have_text(str(before + 1))
    expect(other.locator("#total")).to_contain_text(f"{before + 1} vote")
    shot(other, "toy-poll-phone")
    scroll, inner = overflow(other)
    assert scroll <= inner, f"the poll is {scroll} px wide on a {inner} px screen"
    assert console.errors == []


def test_a_refused_vote_says_why(server: LiveServer, new_context: Callable[..., BrowserContext]) -> None:
    page = new_context().new_page()
    page.goto(f"{server.url}/poll/")
    expect(page.locator("#state")).to_have_text("open")
    # What a stale page sends: an option the poll no longer has (the request rewritten on its way).
    page.route("**/poll/vote", lambda route: route.continue_(post_data='{"option": "gopher"}'))
    page.get_by_role("button", name="Vote for SSE").click()
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("gopher")
