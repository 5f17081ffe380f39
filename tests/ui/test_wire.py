"""The wire view (issue 18): on every page, live, the SSE frames the page receives and the
requests it sends, with their answers and round-trip times; pause, clear, copy-as-curl; the
index links each pattern to its page with the view open."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.rig import LiveServer, read_events

from .rig import Console, Contexts, shot, showcase

pytestmark = pytest.mark.browser

KNOWN = "/basics/events?count=3&interval=0"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with showcase(tmp_path_factory.mktemp("ui-wire")) as srv:
        yield srv


def rows_of(page: Page, url_part: str) -> list[dict[str, str]]:
    got = page.evaluate(
        """(part) => [...document.querySelectorAll('#wire .wire-row.down')]
             .filter((r) => r.querySelector('.wire-url').textContent.includes(part))
             .reverse()  // newest first on screen
             .map((r) => ({ event: r.dataset.event, id: r.dataset.id,
                            data: r.dataset.data,
                            size: r.querySelector('.wire-size').textContent,
                            time: r.querySelector('.wire-time').textContent }))""",
        url_part,
    )
    return list(got)


def listen(page: Page, url: str) -> None:
    """Have the page open one more stream with the shared sse.js, as its own scripts do."""
    page.evaluate(
        """async (url) => {
             const { connect } = await import('/basics/static/sse.js');
             connect(url, { on: { tick: () => {}, done: () => {} }, maxRetries: 0 });
           }""",
        url,
    )


def test_the_frames_of_a_known_stream(server: LiveServer, new_context: Contexts) -> None:
    console = Console()
    page = console.watch(new_context().new_page())
    page.goto(server.url + "/basics/?wire=1")
    expect(page.locator("#wire")).to_be_visible()
    expect(page.locator("#wire-toggle")).to_have_attribute("aria-pressed", "true")
    listen(page, KNOWN)
    expect(page.locator("#wire .wire-row.down", has_text="count=3")).to_have_count(4)
    shown = rows_of(page, "count=3")
    # What a plain client reads from the same URL: the same events, ids and data.
    wire = read_events(server.url + KNOWN, n=4)
    assert [r["event"] for r in shown] == [e.event for e in wire] == ["tick", "tick", "tick", "done"]
    # (A frame without an id: line, like "done", shows the last id, as EventSource reports it.)
    assert [r["id"] for r in shown] == ["1", "2", "3", "3"]
    assert [e.id for e in wire][:3] == ["1", "2", "3"]
    for row, event in zip(shown, wire, strict=True):
        mine, theirs = json.loads(row["data"]), json.loads(event.data)
        theirs.pop("t", None)  # the time each was sent
        assert {k: v for k, v in mine.items() if k != "t"} == theirs
        assert row["size"] == f"{len(row['data'].encode())} B"
        assert re.fullmatch(r"\d\d:\d\d:\d\d", row["time"])
    assert json.loads(shown[-1]["data"]) == {"sent": 3}
    assert [json.loads(r["data"])["n"] for r in shown[:3]] == [1, 2, 3]
    shot(page, "wire-basics")
    assert console.errors == []


def test_a_post_with_its_status_and_copy_as_curl(server: LiveServer, new_context: Contexts) -> None:
    context = new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    page.goto(server.url + "/basics/?wire=1")
    expect(page.locator("#wire")).to_be_visible()
    page.fill("#interval", "1")
    page.click("#apply")
    row = page.locator("#wire .wire-row.up").first
    expect(row).to_have_attribute("data-status", "200")
    expect(row.locator(".wire-dir")).to_have_text("↑ POST")
    expect(row.locator(".wire-url")).to_have_text("/basics/interval")
    expect(row.locator(".wire-status")).to_have_text("200 OK")
    expect(row.locator(".wire-rtt")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(row.locator(".wire-data")).to_have_text('{"seconds":1}')
    expect(row.locator(".wire-answer")).to_contain_text('"seconds"')
    # A refused one is shown as such (red), with the server's explanation.
    page.fill("#interval", "0")
    page.click("#apply")
    refused = page.locator("#wire .wire-row.up").first
    expect(refused).to_have_attribute("data-status", "400")
    expect(refused).to_have_class(re.compile(r"\bfailed\b"))
    expect(refused.locator(".wire-answer")).to_contain_text("seconds")
    # Copy as curl: the command, pasted in a terminal, sends the same request.
    row = page.locator("#wire .wire-row.up").nth(1)
    row.locator(".wire-copy").click()
    expect(row.locator(".wire-copy")).to_have_text("copied")
    command = str(page.evaluate("() => navigator.clipboard.readText()"))
    assert command.startswith("curl -i -X POST ")
    assert command == row.locator(".wire-curl").text_content()
    out = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("HTTP/1.1 200"), out.stdout[:200]
    assert '"seconds":1' in out.stdout.replace(" ", "")
    shot(page, "wire-post")


def test_pause_clear_and_close(server: LiveServer, new_context: Contexts) -> None:
    page = new_context().new_page()
    page.goto(server.url + "/basics/?wire=1")
    expect(page.locator("#wire .wire-row.down").first).to_be_visible()  # the page's own ticks
    page.click("#wire-pause")
    expect(page.locator("#wire-pause")).to_have_attribute("aria-pressed", "true")
    before = page.locator("#wire .wire-row").count()
    listen(page, KNOWN)
    expect(page.locator("#wire .wire-counts")).to_contain_text("held")
    page.wait_for_timeout(500)
    assert page.locator("#wire .wire-row").count() == before  # nothing added while paused
    page.click("#wire-pause")  # resume: what was held is shown
    expect(page.locator("#wire .wire-row.down", has_text="count=3")).to_have_count(4)
    page.click("#wire-clear")
    expect(page.locator("#wire .wire-counts")).to_contain_text("0 frames")
    page.get_by_role("button", name="Close").click()
    expect(page.locator("#wire")).to_be_hidden()
    assert "wire=1" not in page.url
    page.click("#wire-toggle")
    expect(page.locator("#wire")).to_be_visible()
    assert "wire=1" in page.url


def test_every_page_has_it_and_the_index_links_to_it(server: LiveServer, new_context: Contexts) -> None:
    page = new_context().new_page()
    page.goto(server.url + "/")
    links = page.locator("table.patterns a.wire-link")
    hrefs = [a.get_attribute("href") for a in links.all()]
    assert hrefs == ["/basics/?wire=1", "/bidi/?wire=1", "/chat/?wire=1", "/dashboard/?wire=1", "/exec/?wire=1"]
    for path in ["/", "/basics/", "/bidi/", "/chat/", "/dashboard/", "/exec/"]:
        page.goto(server.url + path)
        expect(page.locator("#wire-toggle")).to_be_visible()
    page.goto(server.url + "/")
    page.locator("a.wire-link").nth(3).click()  # the dashboard
    expect(page).to_have_url(re.compile(r"/dashboard/\?wire=1$"))
    expect(page.locator("#wire .wire-row.down").first).to_be_visible()
    expect(page.locator("#wire .wire-row.down[data-event=snapshot]")).to_have_count(1)
