"""A real Chromium on /bidi/ served by two instances on one Redis: a page on one instance asks a
page on the other, which answers to its own instance (issue 7)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.rig import RedisServer
from tests.showcase.bidi_helpers import two_instances
from tests.showcase.browser_bidi_helpers import ask, open_page

pytestmark = [pytest.mark.browser, pytest.mark.redis]


def test_a_page_on_one_instance_asks_a_page_on_the_other(
    page: Page, new_context: Callable[..., BrowserContext], redis_server: RedisServer
) -> None:
    with two_instances(redis_server) as (a, b):
        on_b = open_page(page, b)
        asker = new_context().new_page()
        on_a = open_page(asker, a)
        # Each page lists both clients, with the instance holding each.
        rows = asker.locator("#clients tr")
        expect(rows).to_have_count(2)
        expect(rows.filter(has_text=on_b)).to_contain_text("connected · b")
        expect(rows.filter(has_text=on_a)).to_contain_text("connected · a")

        ask(asker, on_b, "asked on instance a, answered on b")
        card = page.locator(".request")
        expect(card).to_have_count(1)
        card.locator("textarea").fill('{"answered": "on b"}')
        card.locator(".reply").click()
        expect(card.locator(".status")).to_have_text("answered · delivered to the waiter")
        result = asker.locator(".result").first
        expect(result).to_have_class(re.compile(r"\bok\b"))
        expect(result.locator(".body")).to_have_text('{\n  "answered": "on b"\n}')
        asker.screenshot(path="/tmp/bidi-two-instances-asker.png", full_page=True)
        page.screenshot(path="/tmp/bidi-two-instances-answerer.png", full_page=True)
