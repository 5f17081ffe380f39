"""Keyboard-only journeys (issue 18): every action reachable with Tab, arrows and Enter, with a
visible focus, and no console error along the way. Before: chat's edit/delete/react buttons
appeared on hover only and never took focus, the dashboard's rows and headers took none (Kill and
Terminate were mouse-only), and the exec terminal kept Tab after its run had ended."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import psutil
import pytest
from playwright.sync_api import Page, expect

from tests.rig import LiveServer

from .rig import DASH_TOKEN, EXEC_TOKEN, Console, Contexts, focus_ring, focused, shot, showcase, tab_to

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with showcase(tmp_path_factory.mktemp("ui-keys")) as srv:
        yield srv


@pytest.fixture
def console() -> Iterator[Console]:
    seen = Console()
    yield seen
    assert seen.errors == [], "console errors during the journey"


def visible_focus(page: Page) -> None:
    ring = focus_ring(page)
    assert not ring.startswith("none"), f"no visible focus: {ring}"
    assert not ring.endswith(" 0px"), f"no visible focus: {ring}"


def test_chat_edit_react_delete_by_keyboard(server: LiveServer, new_context: Contexts, console: Console) -> None:
    page = console.watch(new_context().new_page())
    page.goto(server.url + "/chat/")
    expect(page.locator("#join-name")).to_be_focused()
    page.keyboard.type("kbd")
    page.keyboard.press("Enter")
    expect(page.locator("#me-name")).to_have_text("kbd")
    expect(page.locator("#text")).to_be_focused()
    page.keyboard.type("frist post")
    page.keyboard.press("Enter")
    msg = page.locator("#messages li.msg").last
    expect(msg.locator(".text")).to_have_text("frist post")
    expect(msg.locator(".actions .edit")).to_have_count(1)  # the server's copy, with its buttons

    # Up in the empty composer edits my last message; Enter saves, the focus comes back.
    page.keyboard.press("ArrowUp")
    editor = msg.locator(".editor textarea")
    expect(editor).to_be_focused()
    expect(editor).to_have_value("frist post")
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("first post")
    page.keyboard.press("Enter")
    expect(msg.locator(".text")).to_have_text("first post")
    expect(msg.locator(".edited")).to_be_visible()
    expect(page.locator("#text")).to_be_focused()

    # Shift+Tab from the composer reaches the message's buttons, shown while focused.
    tab_to(page, "#messages li.msg .actions .react", back=True, most=6)
    bar = msg.locator(".actions")
    expect(bar).to_have_css("opacity", "1")
    visible_focus(page)
    page.keyboard.press("Enter")  # the palette opens on its first emoji
    expect(msg.locator(".palette")).to_be_visible()
    assert focused(page, ".palette .pick")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the second one: ❤️
    chip = msg.locator(".reactions .reaction")
    expect(chip).to_have_count(1)
    expect(chip).to_have_attribute("aria-pressed", "true")
    expect(chip.locator(".emoji")).to_have_text("❤️")
    expect(msg.locator(".actions .react")).to_be_focused()  # kept across the repaint
    shot(page, "keys-chat-react")

    # Delete: Enter asks once more, Enter again deletes; the focus goes back to the composer.
    tab_to(page, "#messages li.msg .actions .delete", most=3)
    visible_focus(page)
    page.keyboard.press("Enter")
    expect(msg.locator(".actions .delete")).to_have_text("Delete?")
    page.keyboard.press("Enter")
    expect(page.locator("#messages li.msg")).to_have_count(0)
    expect(page.locator("#text")).to_be_focused()


def test_dashboard_terminate_by_keyboard(
    server: LiveServer, new_context: Contexts, console: Console, sleeper: subprocess.Popen[bytes]
) -> None:
    page = console.watch(new_context().new_page())
    page.goto(server.url + "/dashboard/")
    expect(page.locator("#proc-rows tr").first).to_be_visible()
    tab_to(page, "#login-open")
    visible_focus(page)
    page.keyboard.press("Enter")
    expect(page.locator("#login-token")).to_be_focused()
    page.keyboard.type(DASH_TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#control-state")).to_have_attribute("data-mode", "control")

    # The filter box has a label, and the sortable headers say how they sort.
    expect(page.get_by_label("Filter processes")).to_have_id("proc-filter")
    expect(page.locator("th[aria-sort]")).to_have_count(1)
    expect(page.locator("th[data-key=cpu]")).to_have_attribute("aria-sort", "descending")
    tab_to(page, "th[data-key=pid] button")
    visible_focus(page)
    page.keyboard.press("Enter")
    expect(page.locator("th[data-key=pid]")).to_have_attribute("aria-sort", "ascending")
    expect(page.locator("th[data-key=cpu]")).not_to_have_attribute("aria-sort", "descending")

    tab_to(page, "#proc-filter", back=True)
    page.keyboard.type(str(sleeper.pid))
    row = page.locator(f"#proc-rows tr[data-pid='{sleeper.pid}']")
    expect(row).to_have_count(1)
    tab_to(page, f"#proc-rows tr[data-pid='{sleeper.pid}']", most=20)
    visible_focus(page)
    page.wait_for_timeout(1200)  # a few frames redraw the table: the row keeps the focus
    assert focused(page, f"#proc-rows tr[data-pid='{sleeper.pid}']")
    page.keyboard.press("Enter")  # pick it and go to its actions
    expect(row).to_have_attribute("aria-selected", "true")
    expect(page.locator("#sel-text")).to_contain_text(f"PID {sleeper.pid}")
    expect(page.locator("button[data-action=terminate]")).to_be_focused()
    page.keyboard.press("Enter")
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-no")).to_be_focused()
    shot(page, "keys-dashboard-confirm")
    page.keyboard.press("Tab")
    expect(page.locator("#confirm-yes")).to_be_focused()
    page.keyboard.press("Enter")
    assert sleeper.wait(10) == -15  # SIGTERM
    assert not psutil.pid_exists(sleeper.pid) or psutil.Process(sleeper.pid).status() == psutil.STATUS_ZOMBIE


def exec_login(page: Page, server: LiveServer) -> None:
    page.goto(server.url + "/exec/")
    expect(page.locator("#token")).to_be_focused()
    page.keyboard.type(EXEC_TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#app")).to_be_visible()


def test_exec_run_and_stop_by_keyboard(server: LiveServer, new_context: Contexts, console: Console) -> None:
    page = console.watch(new_context().new_page())
    exec_login(page, server)

    # A pipe run, stopped with the Terminate button.
    tab_to(page, "#command")
    page.keyboard.type("sleep 30")
    tab_to(page, "#pty")
    page.keyboard.press("Space")
    expect(page.locator("#pty")).not_to_be_checked()
    tab_to(page, "#start")
    page.keyboard.press("Enter")
    expect(page.locator("#run-status")).to_have_text("running")
    tab_to(page, "#terminate")
    visible_focus(page)
    page.keyboard.press("Enter")
    expect(page.locator("#run-status")).to_contain_text("terminated")

    # A pty run, stopped with Ctrl+C in the terminal; then Tab leaves the terminal.
    tab_to(page, "#command", back=True)
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("sleep 30")
    tab_to(page, "#pty")
    page.keyboard.press("Space")
    expect(page.locator("#pty")).to_be_checked()
    page.keyboard.press("Enter")  # submits the form
    expect(page.locator("#run-status")).to_have_text("running")
    terminal = "#term textarea"
    expect(page.locator(terminal)).to_be_focused()
    page.keyboard.press("Tab")  # while it runs, Tab is the program's
    assert focused(page, terminal)
    page.wait_for_timeout(500)  # the child has its terminal (a ^C before that has no one to signal)
    page.keyboard.press("Control+c")
    expect(page.locator("#run-status")).to_contain_text("SIGINT")
    page.keyboard.press("Tab")
    assert not focused(page, terminal), "the terminal kept the focus after its run ended"
    # Nothing after it takes focus on this page (the controls went with the run): Tab goes on
    # to the browser, then round to the page's first control.
    tab_to(page, "header.top a, header.top button, header.top select", most=3)
    visible_focus(page)
    shot(page, "keys-exec-after-run")
