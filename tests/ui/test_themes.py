"""A light and a dark theme on every page, following prefers-color-scheme, and a switch in every
header that overrides it and is remembered (issue 18: light and dark screenshots were
byte-identical)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.rig import LiveServer

from .rig import VIEW_NAMES, Contexts, shot, showcase, views

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with showcase(tmp_path_factory.mktemp("ui-themes")) as srv:
        yield srv


def background(page: Page) -> tuple[int, int, int]:
    css = str(page.evaluate("() => getComputedStyle(document.body).backgroundColor"))
    r, g, b = (int(x) for x in re.findall(r"\d+", css)[:3])
    return r, g, b


def is_light(rgb: tuple[int, int, int]) -> bool:
    return sum(rgb) / 3 > 160


@pytest.mark.parametrize("view", VIEW_NAMES)
def test_light_and_dark_differ(view: str, server: LiveServer, new_context: Contexts) -> None:
    got = {}
    for scheme in ("light", "dark"):
        page = new_context(color_scheme=scheme).new_page()
        views(server.url)[view](page)
        page.mouse.move(0, 0)
        got[scheme] = (background(page), shot(page, f"theme-{view}-{scheme}").read_bytes())
        expect(page.locator("#theme")).to_have_value("auto")
    assert is_light(got["light"][0]), got["light"][0]
    assert not is_light(got["dark"][0]), got["dark"][0]
    assert got["light"][1] != got["dark"][1]


def test_the_switch_overrides_the_system_and_is_remembered(server: LiveServer, new_context: Contexts) -> None:
    context = new_context(color_scheme="dark")
    page = context.new_page()
    page.goto(server.url + "/basics/")
    assert not is_light(background(page))
    page.select_option("#theme", "light")
    assert is_light(background(page))
    page.reload()
    expect(page.locator("#theme")).to_have_value("light")
    assert is_light(background(page))
    # Every app of the origin: the choice is the user's, not the page's.
    other = context.new_page()
    other.goto(server.url + "/dashboard/")
    expect(other.locator("#theme")).to_have_value("light")
    assert is_light(background(other))
    # Back to the system's choice; the other open tab follows.
    page.select_option("#theme", "auto")
    assert not is_light(background(page))
    expect(other.locator("#theme")).to_have_value("auto")
    assert not is_light(background(other))
    # And dark on a light system.
    light = new_context(color_scheme="light").new_page()
    light.goto(server.url + "/chat/")
    assert is_light(background(light))
    light.select_option("#theme", "dark")
    assert not is_light(background(light))
