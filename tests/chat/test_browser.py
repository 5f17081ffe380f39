"""Two real Chromium users on /chat/: both ways, presence, typing, reactions, edits, offline,
a server restart, and an XSS payload that stays text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Dialog, expect

from chat import ChatSettings, create_app
from tests.chat import browser_scenarios as scenarios
from tests.chat.browser_helpers import Contexts, User
from tests.rig import LiveServer

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = ChatSettings(presence_grace=1.0)
    with LiveServer(lambda: create_app(tmp_path, settings=settings)) as srv:
        yield srv


def test_two_people_chat_both_ways(new_context: Contexts, server: LiveServer) -> None:
    scenarios.two_people_chat_both_ways(new_context, server)


def test_offline_client_catches_up_on_everything_exactly_once(new_context: Contexts, server: LiveServer) -> None:
    scenarios.offline_client_catches_up_on_everything_exactly_once(new_context, server)


def test_server_restart_mid_conversation(new_context: Contexts, server: LiveServer) -> None:
    scenarios.server_restart_mid_conversation(new_context, server)


def test_join_rules_and_file_sharing(new_context: Contexts, server: LiveServer, tmp_path: Path) -> None:
    scenarios.join_rules_and_file_sharing(new_context, server, tmp_path)


def test_user_text_is_never_html(new_context: Contexts, server: LiveServer) -> None:
    alice = User(new_context, server, "alice")
    bob = User(new_context, server, "bob")
    dialogs: list[str] = []

    def on_dialog(d: Dialog) -> None:
        dialogs.append(d.message)
        d.dismiss()

    bob.page.on("dialog", on_dialog)
    title = bob.page.title()
    payloads = [
        "<img src=x onerror=\"document.title='pwned';alert(1)\">",
        "<script>alert(2)</script>",
        "javascript:alert(3)",
        "[click](javascript:alert(4)) https://example.com/ok",
    ]
    for text in payloads:
        alice.say(text)
    expect(bob.page.locator("#messages li.msg .text")).to_have_text(payloads)
    assert bob.page.locator("#messages img").count() == 0
    assert bob.page.locator("#messages script").count() == 0
    links = bob.page.locator("#messages a.link")
    expect(links).to_have_count(1)
    assert links.get_attribute("href") == "https://example.com/ok"
    bob.page.wait_for_timeout(300)  # a broken image would fire its onerror by now
    assert bob.page.title() == title
    assert dialogs == []
    assert alice.errors == []
    assert bob.errors == []


def test_history_scrolls_back_and_marks_new_messages(new_context: Contexts, tmp_path: Path) -> None:
    settings = ChatSettings(page_size=20, rate=1000, burst=1000)
    with LiveServer(lambda: create_app(tmp_path / "paged", settings=settings)) as srv:
        alice = User(new_context, srv, "alice")
        bob = User(new_context, srv, "bob")
        for i in range(45):
            r = alice.page.request.post(
                srv.url + "/chat/rooms/general/messages", data={"text": f"old {i}", "client_msg_id": f"o{i}"}
            )
            assert r.status == 201
        expect(bob.page.locator("#messages li.msg")).to_have_count(45)  # seen live
        bob.page.click('#rooms a[data-room="random"]')
        expect(bob.page.locator("#room-title")).to_have_text("random")
        for i in range(3):
            alice.say(f"while bob was away {i}")
        expect(bob.page.locator('#rooms a[data-room="general"] .unread')).to_have_text("3")

        # Opening the room: the "new messages" line sits before what bob has not seen.
        bob.page.click('#rooms a[data-room="general"]')
        items = bob.page.locator("#messages > li")
        divider = bob.page.locator("#messages li.divider")
        expect(divider).to_have_text("New messages")
        expect(divider.locator("xpath=following-sibling::li[1]").locator(".text")).to_have_text("while bob was away 0")
        bob.page.screenshot(path="/tmp/chat-new-messages.png")

        # Scrolling up loads older pages (20 at a time) until the start of the room.
        shown = bob.page.locator("#messages li.msg")
        for _ in range(20):
            if shown.count() == 48:
                break
            shown.first.scroll_into_view_if_needed()
            bob.page.wait_for_timeout(200)
        expect(shown).to_have_count(48)
        expect(bob.page.locator("#history-state")).to_have_text("This is the start of the room.")
        texts = bob.texts
        assert texts == [f"old {i}" for i in range(45)] + [f"while bob was away {i}" for i in range(3)]
        assert items.count() == 49  # 48 messages and the one divider
        assert alice.errors == []
        assert bob.errors == []
