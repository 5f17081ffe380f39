"""The page's control for deleting a room (issue 14.4), in two real Chromium users."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from chat import ChatSettings, create_app
from tests.chat.browser_helpers import Contexts, User
from tests.rig import LiveServer

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(lambda: create_app(tmp_path, settings=ChatSettings(presence_grace=0.5))) as srv:
        yield srv


def test_the_creator_deletes_an_empty_room_and_it_leaves_every_list(new_context: Contexts, server: LiveServer) -> None:
    ada = User(new_context, server, "ada")
    bob = User(new_context, server, "bob")
    a, b = ada.page, bob.page
    a.fill("#new-room-name", "scratch")
    a.click("#new-room button[type=submit]")
    expect(a.locator("#room-title")).to_have_text("scratch")
    expect(b.locator("#rooms .room-name")).to_have_text(["general", "random", "scratch"])
    expect(a.locator("#delete-room")).to_be_visible()  # ada made it
    b.click("#rooms a[data-room=scratch]")
    expect(b.locator("#room-title")).to_have_text("scratch")
    expect(b.locator("#delete-room")).to_be_hidden()  # bob did not
    # Bob is in it: refused, and the page says why.
    a.click("#delete-room")
    expect(a.locator("#composer-error")).to_contain_text("other people in it")
    b.click("#rooms a[data-room=general]")
    expect(a.locator("#online li")).to_have_count(1)  # bob's grace period is over
    a.click("#delete-room")
    expect(a.locator("#room-title")).to_have_text("general")
    expect(a.locator("#rooms .room-name")).to_have_text(["general", "random"])
    expect(b.locator("#rooms .room-name")).to_have_text(["general", "random"])  # live, from the lobby
    assert ada.errors == []
    assert bob.errors == []
