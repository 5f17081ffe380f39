"""Chat browser scenarios run on each store: tests/chat/test_browser.py on memory, test_browser_scaleout.py on Redis."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from playwright.sync_api import expect

from tests.chat.browser_helpers import Contexts, User
from tests.rig import LiveServer, wait_until


def gradient_png(width: int, height: int) -> bytes:
    """A small RGB PNG, made by hand (no imaging library needed)."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 255 // width, y * 255 // height, 160)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def two_people_chat_both_ways(new_context: Contexts, server: LiveServer) -> None:
    alice = User(new_context, server, "alice")
    bob = User(new_context, server, "bob")
    a, b = alice.page, bob.page
    expect(a.locator("#online li")).to_have_count(2)
    expect(a.locator("#online")).to_contain_text("bob")
    expect(b.locator("#online-count")).to_have_text("2")

    a.fill("#text", "hello bo")  # typing…
    expect(b.locator("#typing")).to_have_text("alice is typing…")
    a.press("#text", "Enter")
    expect(b.locator("#messages li.msg .text")).to_have_text(["hello bo"])
    expect(b.locator("#typing")).to_have_text("")  # her message ends her typing
    expect(a.locator("#messages li.msg .text")).to_have_text(["hello bo"])  # one copy, not echo + copy
    expect(a.locator("#outbox li")).to_have_count(0)

    bob.say("hi @alice,\nwelcome")
    expect(a.locator("#messages li.msg")).to_have_count(2)
    mention = a.locator("#messages li.msg").nth(1)
    expect(mention).to_have_class("msg mention-me")
    expect(mention.locator(".mention.me")).to_have_text("@alice")
    expect(mention.locator(".text")).to_have_text("hi @alice,\nwelcome")

    # Bob reacts to alice's message; alice sees it, and adds hers to the same chip.
    msg_on_b = b.locator("#messages li.msg").first
    msg_on_b.hover()
    msg_on_b.locator(".actions .react").click()
    msg_on_b.locator(".palette .pick").first.click()
    chip = a.locator("#messages li.msg").first.locator(".reaction")
    expect(chip.locator(".count")).to_have_text("1")
    chip.click()
    expect(b.locator("#messages li.msg").first.locator(".reaction .count")).to_have_text("2")
    expect(b.locator("#messages li.msg").first.locator(".reaction")).to_have_attribute("aria-pressed", "true")

    # Alice edits her message; bob sees the new text, marked edited.
    first = a.locator("#messages li.msg").first
    first.hover()
    first.locator(".actions .edit").click()
    first.locator(".editor textarea").fill("hello bob")
    first.locator(".editor textarea").press("Enter")
    expect(b.locator("#messages li.msg").first.locator(".text")).to_have_text("hello bob")
    expect(b.locator("#messages li.msg").first.locator(".edited")).to_have_text("(edited)")
    expect(b.locator("#messages li.msg").first.locator(".reaction .count")).to_have_text("2")  # kept

    # Only your own messages offer edit and delete; a delete vanishes on the other side.
    expect(a.locator("#messages li.msg").nth(1).locator(".actions .edit")).to_have_count(0)
    bob.say("never mind")
    mine = b.locator("#messages li.msg", has_text="never mind")
    mine.hover()
    mine.locator(".actions .delete").click()
    mine.locator(".actions .delete").click()  # the second click confirms
    expect(a.locator("#messages li.msg")).to_have_count(2)
    expect(b.locator("#messages li.msg")).to_have_count(2)

    # A new room: it shows up for bob, and a message there is an unread count for him.
    a.fill("#new-room-name", "Design Team")
    a.press("#new-room-name", "Enter")
    expect(a.locator("#room-title")).to_have_text("design-team")
    alice.say("in the new room")
    expect(b.locator('#rooms a[data-room="design-team"] .unread')).to_have_text("1")
    a.screenshot(path="/tmp/chat-room-alice.png")
    b.screenshot(path="/tmp/chat-room-bob.png")
    b.click('#rooms a[data-room="design-team"]')
    expect(b.locator("#messages li.msg .text")).to_have_text(["in the new room"])
    expect(b.locator('#rooms a[data-room="design-team"] .unread')).to_have_count(0)

    # Bob closes his tab: after the grace period alice sees him gone.
    bob.context.close()
    expect(a.locator("#online li")).to_have_count(1, timeout=10_000)
    assert alice.errors == []
    assert bob.errors == []


def offline_client_catches_up_on_everything_exactly_once(new_context: Contexts, server: LiveServer) -> None:
    alice = User(new_context, server, "alice")
    bob = User(new_context, server, "bob")
    alice.say("before")
    expect(bob.page.locator("#messages li.msg")).to_have_count(1)

    bob.context.set_offline(True)
    expect(bob.page.locator("#state")).not_to_have_text("open")
    sent = [f"offline message {i}" for i in range(1, 21)]
    for text in sent:
        alice.say(text)
    expect(alice.page.locator("#messages li.msg")).to_have_count(21)
    expect(alice.page.locator("#outbox li")).to_have_count(0)
    edited = alice.page.locator("#messages li.msg").nth(7)  # "offline message 7"
    expect(edited.locator(".text")).to_have_text("offline message 7")
    edited.hover()
    edited.locator(".actions .edit").click()
    edited.locator(".editor textarea").fill("offline message 7, edited")
    edited.locator(".editor textarea").press("Enter")
    expect(alice.page.locator("#messages li.msg .edited")).to_have_count(1)
    assert bob.texts == ["before"]  # really offline: nothing arrived meanwhile

    bob.context.set_offline(False)
    expect(bob.page.locator("#state")).to_have_text("open", timeout=15_000)
    expected = ["before", *sent]
    expected[7] = "offline message 7, edited"
    expect(bob.page.locator("#messages li.msg .text")).to_have_text(expected)
    expect(bob.page.locator("#messages li.msg .edited")).to_have_count(1)
    # Caught up by resuming from its last event id, not by reloading the room.
    assert bob.page.locator("#conversation").get_attribute("data-resets") is None
    assert alice.errors == []
    assert bob.errors == []


def server_restart_mid_conversation(new_context: Contexts, server: LiveServer) -> None:
    alice = User(new_context, server, "alice")
    bob = User(new_context, server, "bob")
    for i in range(3):
        alice.say(f"a{i}")
    expect(bob.page.locator("#messages li.msg")).to_have_count(3)

    server.stop()
    expect(alice.page.locator("#state")).to_have_text("retrying")
    alice.say("sent while the server is down")  # kept in the outbox, retried
    expect(alice.page.locator("#outbox li")).to_have_count(1)
    server.start()
    expect(alice.page.locator("#state")).to_have_text("open", timeout=15_000)
    expect(bob.page.locator("#state")).to_have_text("open", timeout=15_000)
    bob.say("b0")
    expected = ["a0", "a1", "a2", "sent while the server is down", "b0"]
    for user in (alice, bob):
        expect(user.page.locator("#messages li.msg .text")).to_have_text(expected, timeout=15_000)
        expect(user.page.locator("#outbox li")).to_have_count(0)
    for user in (alice, bob):
        assert user.page.locator("#conversation").get_attribute("data-resets") is None
    # A page loaded after the restart shows the same, from the database.
    bob.page.reload()
    expect(bob.page.locator("#messages li.msg .text")).to_have_text(expected)
    assert alice.errors == []
    assert bob.errors == []


def join_rules_and_file_sharing(new_context: Contexts, server: LiveServer, tmp_path: Path) -> None:
    alice = User(new_context, server, "alice")
    ctx = new_context()
    page = ctx.new_page()
    page.goto(server.url + "/chat/")
    page.fill("#join-name", "alice")
    page.click("#join-form button[type=submit]")
    expect(page.locator("#join-error")).to_contain_text("taken")
    page.fill("#join-name", "bob smith")
    page.click("#join-form button[type=submit]")
    expect(page.locator("#join-error")).to_contain_text("no spaces")
    page.screenshot(path="/tmp/chat-join.png")

    png = tmp_path / "gradient.png"
    png.write_bytes(gradient_png(160, 90))
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    alice.page.set_input_files("#file", [str(png), str(notes)])
    expect(alice.page.locator("#messages li.msg")).to_have_count(2)
    image = alice.page.locator("#messages li.msg img")
    expect(image).to_have_count(1)
    wait_until(lambda: image.evaluate("img => img.naturalWidth") == 160, what="the image to load")
    card = alice.page.locator("#messages a.file.card")
    expect(card.locator(".file-name")).to_have_text("notes.txt")
    assert card.get_attribute("download") == "notes.txt"
    alice.say("a caption-less image and a text file, above")
    alice.page.screenshot(path="/tmp/chat-files.png")
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (10 * 1024 * 1024 + 1))
    alice.page.set_input_files("#file", str(big))
    expect(alice.page.locator("#composer-error")).to_contain_text("at most 10 MiB")
    assert alice.errors == []
