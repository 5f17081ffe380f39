"""The front ends' shared helpers (issue 17.5): one el() (shared/static/dom.js), one api()
(api.js) and one say() (notice.js) for every page, instead of a copy in each app.

- A refused request shows the server's own detail (shared/errors.py's JSON shape) in the page's
  error region, which is a live region (role=alert), on each page that has one.
- el() puts text in as text: markup in a string never becomes an element.
- No app's static JS has its own el() or fetch wrapper again, or a file that hides a shared one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.rig import LiveServer

from .rig import DASH_TOKEN, Contexts, join_chat, log_in_exec, showcase

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / "shared" / "static"
XSS = '<img src=x onerror="window.__pwned = 1">'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with showcase(tmp_path_factory.mktemp("ui-front")) as srv:
        yield srv


def server_says(page: Page, url: str, path: str, body: dict[str, object]) -> str:
    """The detail the server answers the same request with (the page's cookies, its Origin)."""
    res = page.request.post(url + path, data=body, headers={"Origin": url})
    assert 400 <= res.status < 500, (path, res.status, res.text())
    detail = res.json()["detail"]
    assert isinstance(detail, str)
    assert detail
    return detail


# -- a refused request: the server's words, in a live region ---------------------------------------


def chat_room(page: Page, url: str) -> tuple[str, str, dict[str, object]]:
    join_chat(page, url, "helpers")
    page.fill("#new-room-name", "no room!")  # "!" is not allowed in a room name
    page.press("#new-room-name", "Enter")
    return "#room-error", "/chat/rooms", {"name": "no room!"}


def chat_join(page: Page, url: str) -> tuple[str, str, dict[str, object]]:
    page.goto(url + "/chat/")
    page.fill("#join-name", "two words")  # a name has no spaces
    page.press("#join-name", "Enter")
    return "#join-error", "/chat/session", {"name": "two words"}


def exec_start(page: Page, url: str) -> tuple[str, str, dict[str, object]]:
    log_in_exec(page, url)
    page.uncheck("#pty")
    page.fill("#command", "no-such-command-allowed --flag")
    page.click("#start")
    return "#start-error", "/exec/runs", {"argv": ["no-such-command-allowed", "--flag"], "pty": False}


def dashboard_login(page: Page, url: str) -> tuple[str, str, dict[str, object]]:
    page.goto(url + "/dashboard/")
    page.click("#login-open")
    page.fill("#login-token", "not-" + DASH_TOKEN)
    page.press("#login-token", "Enter")
    return "#login-error", "/dashboard/login", {"token": "not-" + DASH_TOKEN}


REFUSALS: dict[str, Callable[[Page, str], tuple[str, str, dict[str, object]]]] = {
    "chat-room": chat_room,
    "chat-join": chat_join,
    "exec-start": exec_start,
    "dashboard-login": dashboard_login,
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_request_shows_the_servers_detail(server: LiveServer, new_context: Contexts, case: str) -> None:
    page = new_context().new_page()
    region, path, body = REFUSALS[case](page, server.url)
    shown = page.locator(region)
    expect(shown).to_be_visible()
    expect(shown).to_have_attribute("role", "alert")  # said by a screen reader as it appears
    detail = server_says(page, server.url, path, body)
    expect(shown).to_contain_text(detail)
    assert "HTTP" not in shown.inner_text(), "the server's words, not a status code"


def test_basics_logs_the_servers_detail_for_a_refused_interval(server: LiveServer, page: Page) -> None:
    page.goto(server.url + "/basics/")
    page.fill("#interval", "0")
    page.click("#apply")
    line = page.locator("#log li.note").filter(has=page.locator(".type", has_text="error")).first
    expect(line).to_be_visible()
    detail = server_says(page, server.url, "/basics/interval", {"seconds": 0})
    expect(line.locator(".data")).to_have_text(detail)


def test_a_network_failure_says_the_server_cannot_be_reached(server: LiveServer, page: Page) -> None:
    """The dashboard's login was an unhandled rejection when the network failed: now it says so."""
    page.goto(server.url + "/dashboard/")
    page.route("**/dashboard/login", lambda route: route.abort())
    page.click("#login-open")
    page.fill("#login-token", DASH_TOKEN)
    page.press("#login-token", "Enter")
    expect(page.locator("#login-error")).to_contain_text("cannot reach the server")


# -- el(): text stays text ----------------------------------------------------------------------------


def test_el_puts_markup_in_as_text(server: LiveServer, page: Page) -> None:
    page.goto(server.url + "/basics/")
    got = page.evaluate(
        """async (xss) => {
             const { el } = await import('/basics/static/dom.js');
             const p = el('p', { className: 'probe', title: xss }, xss, 42, null, el('b', 'x', xss));
             document.body.append(p);
             const refused = [];
             for (const attrs of [{ onerror: 'window.__pwned = 1' }, { innerHTML: xss }, { srcdoc: xss }]) {
               try { el('div', attrs); } catch (e) { refused.push(e instanceof TypeError); }
             }
             await new Promise((r) => setTimeout(r, 300));  // an <img src=x> would have failed by now
             return { text: p.textContent, imgs: document.querySelectorAll('img').length,
                      children: [...p.children].map((c) => c.tagName), title: p.title,
                      pwned: window.__pwned ?? null, refused };
           }""",
        XSS,
    )
    assert got == {
        "text": f"{XSS}42{XSS}",
        "imgs": 0,
        "children": ["B"],
        "title": XSS,
        "pwned": None,
        "refused": [True, True, True],
    }


# -- no fourth copy ---------------------------------------------------------------------------------


def app_scripts() -> list[Path]:
    """Every app's own front-end JS: <app>/static/*.js outside shared/ (and node_modules)."""
    found = [p for p in ROOT.glob("*/static/*.js") if p.parent != SHARED and "node_modules" not in p.parts]
    assert len(found) >= 10, found  # chat, dashboard, exec, showcase: the glob did find them
    return sorted(found)


OWN_EL = re.compile(r"\b(function\s+(el|h)\s*\(|(const|let|var)\s+(el|h)\s*=\s*(\(|function|async))")
BARE_FETCH = re.compile(r"\bfetch\s*\(")
OWN_ERROR = re.compile(r"\bclass\s+\w*Error\b")
CREATE = re.compile(r"\bcreateElement\s*\(")
# xterm_csp.js replaces document.createElement itself (xterm's <style> under the CSP): not a builder.
CREATE_ALLOWED = {"xterm_csp.js"}


def test_no_app_has_its_own_el_or_fetch_wrapper() -> None:
    found: list[str] = []
    for path in app_scripts():
        text = path.read_text()
        where = path.relative_to(ROOT)
        if OWN_EL.search(text):
            found.append(f"{where}: defines its own el()/h(): import {{ el }} from './dom.js'")
        if BARE_FETCH.search(text):
            found.append(f"{where}: calls fetch(): use api() from './api.js' (it reads the server's error)")
        if OWN_ERROR.search(text):
            found.append(f"{where}: defines an error class: ApiError is in './api.js'")
        if CREATE.search(text) and path.name not in CREATE_ALLOWED:
            found.append(f"{where}: calls createElement(): use el() from './dom.js'")
    assert not found, "\n".join(found)


def test_no_app_file_hides_a_shared_one() -> None:
    """An app's static folder is searched before shared/static (shared/pages.py), so a chat
    api.js would be served instead of the shared one, to every module of that app."""
    shared = {p.name for p in SHARED.iterdir()}
    clashes = [str(p.relative_to(ROOT)) for p in ROOT.glob("*/static/*") if p.parent != SHARED and p.name in shared]
    assert not clashes, f"these hide shared/static files of the same name: {clashes}"


def test_the_shared_helpers_are_the_only_copies() -> None:
    """In shared/static too: dom.js alone builds elements (theme.js is a classic script, loaded
    before any module, so it cannot import), api.js alone wraps fetch; sse.js answers the server's
    requests with its session token and sse-worker.js runs where no module of the page is."""
    fetch_ok = {"api.js", "sse.js", "sse-worker.js"}
    create_ok = {"dom.js", "theme.js"}
    found: list[str] = []
    for path in sorted(SHARED.glob("*.js")):
        text = path.read_text()
        if path.name != "dom.js" and OWN_EL.search(text):
            found.append(f"{path.name}: defines its own el()")
        if path.name not in fetch_ok and BARE_FETCH.search(text):
            found.append(f"{path.name}: calls fetch()")
        if path.name not in create_ok and CREATE.search(text):
            found.append(f"{path.name}: calls createElement()")
    assert not found, "\n".join(found)
