"""What the pages say so nothing surprises a newcomer (issue 18): a tick replayed after being away
looks different from a live one, a new ticker interval is announced on every viewer's page, and
exec says what pipe mode (no terminal) changes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.rig import LiveServer, wait_until

from .rig import Console, Contexts, log_in_exec, shot, showcase

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with showcase(tmp_path_factory.mktemp("ui-notes")) as srv:
        yield srv


def _types(page: Page) -> list[str]:
    return page.locator("#log li .type").all_text_contents()


def test_replayed_ticks_and_a_shared_interval_are_said(server: LiveServer, new_context: Contexts) -> None:
    console = Console()
    mine, theirs = (console.watch(new_context().new_page()) for _ in range(2))
    for page in (mine, theirs):
        page.goto(server.url + "/basics/")
    wait_until(lambda: "tick" in _types(mine), 10, "a first tick at the old interval")
    theirs.fill("#interval", "0.25")
    theirs.click("#apply")
    # The other viewer's page says the ticker changed, for everybody, and shows the new value.
    expect(mine.locator("#log li.note .data").filter(has_text="every 0.25 s")).to_have_count(1, timeout=10_000)
    expect(mine.locator("#interval")).to_have_value("0.25")
    wait_until(lambda: _types(mine).count("tick") >= 3, 10, "live ticks")
    assert "replayed" not in _types(mine)
    # Away for 3 s: the ticks missed meanwhile arrive first, marked as replayed; then live ones.
    mine.click("#disconnect")
    mine.wait_for_timeout(3000)
    mine.click("#connect")
    wait_until(lambda: _types(mine)[:3] == ["tick"] * 3 and "replayed" in _types(mine), 10, "replayed then live")
    replayed = mine.locator("#log li.replayed")
    assert replayed.count() >= 3
    shot(mine, "notes-basics-replayed")
    assert console.errors == []


def test_pipe_mode_says_what_it_changes(server: LiveServer, new_context: Contexts) -> None:
    page = new_context().new_page()
    log_in_exec(page, server.url)
    note = page.locator("#pty-note")
    expect(note).to_be_hidden()  # a terminal (pty) is the default
    page.uncheck("#pty")
    expect(note).to_be_visible()
    expect(note).to_contain_text("no colours")
    page.check("#pty")
    expect(note).to_be_hidden()
