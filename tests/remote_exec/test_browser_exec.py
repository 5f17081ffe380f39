"""A real Chromium on /exec/: xterm.js under the page's strict CSP, typing into a REPL, two
browsers on one run, and a read-only viewer."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.rig import LiveServer

from .helpers import TOKEN, ExecClient, exec_server, make_policy

pytestmark = pytest.mark.browser

SHOTS = Path("/tmp")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("exec-browser")
    (base / "work").mkdir()
    with exec_server(base / "data", make_policy(base / "work")) as srv:
        yield srv


def log_in(page: Page, server: LiveServer, token: str = TOKEN, run: str | None = None) -> None:
    page.goto(f"{server.url}/exec/#token={token}" + (f"&run={run}" if run else ""))
    expect(page.locator("#app")).to_be_visible()
    assert "token" not in page.url  # dropped from the address bar once exchanged


def start(page: Page, command: str, *, pty: bool = True) -> None:
    page.fill("#command", command)
    page.set_checked("#pty", pty)
    page.click("#start")


def screen(page: Page) -> str:
    return page.locator("#term .xterm-rows").inner_text()


def test_login_page_when_not_logged_in(page: Page, server: LiveServer) -> None:
    page.goto(f"{server.url}/exec/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", "not-the-token")
    page.click("#login-form button")
    expect(page.locator("#login-error")).to_contain_text("not valid")
    page.fill("#token", TOKEN)
    page.fill("#name", "Ada")
    page.click("#login-form button")
    expect(page.locator("#who")).to_have_text("signed in as Ada")
    page.screenshot(path=str(SHOTS / "exec-login-done.png"))


def test_coloured_output_in_the_terminal(page: Page, server: LiveServer) -> None:
    log_in(page, server)
    start(page, r"printf '\033[31mRED\033[0m plain \033[38;2;0;200;0mGREEN\033[0m\n'")
    red = page.locator("#term .xterm-rows span.xterm-fg-1", has_text="RED")
    expect(red).to_be_visible()
    # The colour really applies (xterm's CSS goes through the CSSOM under the CSP: xterm_csp.js).
    expect(red).to_have_css("color", "rgb(248, 81, 73)")  # the page's palette red
    green = page.locator("#term .xterm-rows span", has_text="GREEN")
    expect(green).to_have_css("color", "rgb(0, 200, 0)")  # 24-bit colour: a style attribute
    expect(page.locator("#run-status")).to_have_text(re.compile(r"^exit 0"))
    expect(page.locator("#runs li.selected .exit")).to_have_text("exit 0")
    page.screenshot(path=str(SHOTS / "exec-colours.png"))


def test_a_terminal_session_logs_no_csp_error(page: Page, server: LiveServer) -> None:
    """xterm's CSS (its <style> elements, 24-bit colours as style attributes) applies with no CSP
    violation: before, a session logged 16 for one run and 70-88 over a longer one (issue 18)."""
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => console.error("
        "'Content Security Policy: ' + e.effectiveDirective))"
    )
    log_in(page, server)
    start(page, r"printf '\033[31mRED\033[0m \033[38;2;255;100;0mORANGE\033[48;2;0;90;200mON-BLUE\033[0m\n'")
    expect(page.locator("#term .xterm-rows span.xterm-fg-1", has_text="RED")).to_have_css("color", "rgb(248, 81, 73)")
    expect(page.locator("#term .xterm-rows span", has_text="ORANGE")).to_have_css("color", "rgb(255, 100, 0)")
    blue = page.locator("#term .xterm-rows span", has_text="ON-BLUE")
    expect(blue).to_have_css("background-color", "rgb(0, 90, 200)")
    # More of what xterm restyles: a REPL typed into, the window resized (cell sizes), a second run.
    start(page, "python3 -q")
    expect(page.locator("#term .xterm-rows")).to_contain_text(">>>")
    page.locator("#term .xterm-helper-textarea").focus()
    page.keyboard.type("print('\\x1b[38;2;10;200;90m' + 'TR' + 'UE' + '\\x1b[0m')\n")
    true = page.locator("#term .xterm-rows span", has_text=re.compile("^TRUE$"))
    expect(true).to_have_css("color", "rgb(10, 200, 90)")
    page.set_viewport_size({"width": 900, "height": 700})
    page.wait_for_timeout(300)
    page.keyboard.press("Control+D")
    expect(page.locator("#run-status")).to_have_text(re.compile(r"^exit 0"))
    start(page, "echo again")
    expect(page.locator("#term .xterm-rows")).to_contain_text("again")
    page.wait_for_timeout(300)  # a late violation would be logged by now
    assert violations == []
    assert page.locator("#term xterm-style").count() >= 1  # xterm's CSS went the CSSOM way
    page.screenshot(path=str(SHOTS / "exec-csp-clean.png"))


def test_a_refused_file_argument_shows_the_rule_and_how_to_allow_it(page: Page, server: LiveServer) -> None:
    log_in(page, server)
    start(page, "cat /etc/passwd", pty=False)
    error = page.locator("#start-error")
    expect(error).to_contain_text("outside the allowed directories")
    expect(error).to_contain_text("[files.outside]")
    expect(error).to_contain_text("[cwd] allow")


def test_pipe_run_marks_stderr_and_takes_input(page: Page, server: LiveServer) -> None:
    log_in(page, server)
    start(page, """sh -c 'printf "name? "; read n; echo "hello $n" >&2'""", pty=False)
    expect(page.locator("#out .stdout")).to_have_text("name? ")
    page.fill("#input-line", "Ada")
    page.press("#input-line", "Enter")
    expect(page.locator("#out .stderr")).to_have_text("hello Ada\n")
    expect(page.locator("#out .input")).to_have_text("Ada\n")
    expect(page.locator("#run-status")).to_have_text(re.compile(r"^exit 0"))
    page.screenshot(path=str(SHOTS / "exec-pipe.png"))


def test_repl_typed_through_the_page_and_shared_with_a_second_browser(
    page: Page, server: LiveServer, new_context: Callable[..., BrowserContext]
) -> None:
    log_in(page, server)
    start(page, "python3 -q")
    expect(page.locator("#term .xterm-rows")).to_contain_text(">>>")
    run_id = page.url.split("#run=")[1]
    page.locator("#term .xterm-helper-textarea").focus()
    page.keyboard.type("print(6*7)\n")
    expect(page.locator("#term .xterm-rows")).to_contain_text("42")

    # A second browser (another operator session) opens the same run: same screen, from the start.
    other = new_context().new_page()
    log_in(other, server, run=run_id)
    expect(other.locator("#term .xterm-rows")).to_contain_text(">>> print(6*7)")
    expect(other.locator("#term .xterm-rows")).to_contain_text("42")
    expect(page.locator("#viewers")).to_have_text("2 watching")
    # Input from either shows up in both.
    other.locator("#term .xterm-helper-textarea").focus()
    other.keyboard.type("print('from', 'two')\n")
    expect(page.locator("#term .xterm-rows")).to_contain_text("from two")
    expect(other.locator("#term .xterm-rows")).to_contain_text("from two")
    # Same screen in both once each has painted the next prompt (xterm paints on its own frames).
    for _ in range(50):
        mine, theirs = (screen(p).split(">>> print(6*7)")[1] for p in (page, other))
        if mine == theirs:
            break
        page.wait_for_timeout(100)
    assert mine == theirs
    page.screenshot(path=str(SHOTS / "exec-repl.png"))

    # A read-only viewer sees it too, and has nothing to type with.
    with ExecClient(server.url) as ex:
        minted = ex.http.post("/exec/tokens", json={"run_id": run_id}).json()
    viewer = new_context().new_page()
    viewer.goto(server.url + minted["url"])
    expect(viewer.locator("#term .xterm-rows")).to_contain_text("from two")
    expect(viewer.locator("#who")).to_contain_text("read-only")
    expect(viewer.locator("#controls")).to_be_hidden()
    expect(viewer.locator("#new-run")).to_be_hidden()
    viewer.locator("#term .xterm-helper-textarea").focus()
    viewer.keyboard.type("print('viewer was here')\n")
    viewer.screenshot(path=str(SHOTS / "exec-viewer.png"))

    page.locator("#term .xterm-helper-textarea").focus()
    page.keyboard.press("Control+D")
    expect(page.locator("#run-status")).to_have_text(re.compile(r"^exit 0"))
    expect(viewer.locator("#run-status")).to_have_text(re.compile(r"^exit 0"))
    assert "viewer was here" not in screen(page)
