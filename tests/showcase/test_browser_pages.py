"""Every page of `python -m showcase` as a newcomer meets it (issue 18): copy-paste commands that
name the server the page came from (tests run on a free port, never 8000), and an icon that loads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, expect

from dashboard.settings import DashboardSettings
from remote_exec.settings import ExecSettings
from showcase.app import Settings, create_app
from tests.conftest import ARTIFACTS
from tests.rig import LiveServer, read_events

pytestmark = pytest.mark.browser

PAGES = ["/", "/basics/", "/bidi/", "/chat/", "/dashboard/", "/exec/"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("pages")
    settings = Settings(
        data_dir=data,
        exec=ExecSettings(token="pages-exec-token-0123456789"),
        dashboard=DashboardSettings(control_token="pages-dash-012345"),
    )
    with LiveServer(lambda: create_app(settings)) as srv:
        yield srv


def shot(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / f"pages-{name}.png"


@pytest.mark.parametrize("path", ["/", "/basics/"])
def test_commands_on_the_page_name_its_real_origin(
    path: str, server: LiveServer, new_context: Callable[..., BrowserContext]
) -> None:
    assert not server.url.endswith(":8000")
    page = new_context().new_page()
    page.goto(server.url + path)
    origins = page.locator("code .origin")
    expect(origins.first).to_have_text(server.url)
    assert set(origins.all_text_contents()) == {server.url}
    assert "127.0.0.1:8000" not in (page.locator("body").text_content() or "")
    # The curl line, as copied from the page, works.
    curl = next(c for c in page.locator("code").all_text_contents() if c.startswith("curl -N "))
    url = curl.removeprefix("curl -N ").strip()
    assert url == f"{server.url}/basics/events"
    (event,) = read_events(url + "?count=1&interval=0", n=1)
    assert event.event == "tick"
    page.screenshot(path=str(shot(path.strip("/") or "index")), full_page=True)


def test_bidi_command_names_its_real_origin_too(server: LiveServer, new_context: Callable[..., BrowserContext]) -> None:
    page = new_context().new_page()
    page.goto(server.url + "/bidi/")
    expect(page.locator("#cli-hint")).to_contain_text(f"sse trigger {server.url}/bidi/trigger")


@pytest.mark.parametrize("path", PAGES)
def test_every_page_has_an_icon_and_no_404(
    path: str, server: LiveServer, new_context: Callable[..., BrowserContext]
) -> None:
    page = new_context().new_page()
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.on("console", lambda m: _note_404(m, missing))
    page.goto(server.url + path)
    page.wait_for_load_state("load")
    icon = page.locator('link[rel="icon"]')
    expect(icon).to_have_count(1)
    href = icon.get_attribute("href") or ""
    assert href.startswith(path.rstrip("/") + "/static/"), href  # from the page's own app
    got = httpx.get(server.url + href, timeout=10)
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in got.content
    page.wait_for_timeout(300)  # the browser asks for its icon after load
    assert missing == []


def _note_404(message: ConsoleMessage, into: list[str]) -> None:
    if "404" in message.text:
        into.append(f"{message.location.get('url')}: {message.text}")
