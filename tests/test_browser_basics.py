"""A real Chromium on /basics/: EventSource through sse.js, reconnect across a server restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from shared import Hub, MemoryBackend
from showcase import basics
from tests.rig import LiveServer, wait_until

pytestmark = pytest.mark.browser


@pytest.fixture
def server() -> Iterator[LiveServer]:
    backend = MemoryBackend()  # survives restarts, standing in for a durable store
    with LiveServer(lambda: basics.create_app(Hub(backend), interval=0.1)) as srv:
        yield srv


def count(page: Page) -> int:
    return int(page.locator("#count").text_content() or 0)


def shown_ids(page: Page) -> list[int]:
    """The sequence numbers of the tick ids in the page's log, oldest first."""
    ids = page.locator("#log li.tick .id").all_text_contents()
    return [int(i.rsplit("-", 1)[1]) for i in reversed(ids)]


def test_page_shows_ticks_and_survives_disconnect_connect(page: Page, server: LiveServer) -> None:
    page.goto(server.url + "/basics/")
    expect(page.locator("#state")).to_have_text("open")
    wait_until(lambda: count(page) >= 5, what="ticks")
    page.click("#disconnect")
    expect(page.locator("#state")).to_have_text("disconnected")
    before = shown_ids(page)
    page.wait_for_timeout(500)  # ticks go on without us
    page.click("#connect")
    wait_until(lambda: count(page) >= len(before) + 8, what="ticks")
    ids = shown_ids(page)
    # The missed ticks arrived first: one unbroken run, nothing twice.
    assert ids == list(range(ids[0], ids[0] + len(ids)))


def test_event_source_resumes_after_server_restart(page: Page, server: LiveServer) -> None:
    page.goto(server.url + "/basics/")
    wait_until(lambda: count(page) >= 3, what="ticks")
    server.stop()  # graceful: streams get a final event with retry: 1000
    expect(page.locator("#state")).to_have_text("retrying")
    server.start()
    expect(page.locator("#state")).to_have_text("open", timeout=10_000)
    count_after_restart = int(page.locator("#count").text_content() or 0)
    wait_until(lambda: count(page) >= count_after_restart + 5, what="ticks")
    ids = shown_ids(page)
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert page.locator("#resets").text_content() == "0"


def test_a_finished_counted_stream_is_not_fetched_again(page: Page, server: LiveServer) -> None:
    """After ``done``, EventSource reconnects once with the last id and gets 204: it stops for
    good (before, it fetched ``done`` again about once a second, forever)."""
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "count=3" in r.url else None)
    page.goto(server.url + "/basics/")
    page.evaluate(
        """() => {
          window.got = [];
          const es = new EventSource("/basics/events?count=3&interval=0");
          for (const type of ["tick", "done"]) {
            es.addEventListener(type, (ev) => window.got.push([type, ev.lastEventId]));
          }
          es.onerror = () => window.got.push(["error", String(es.readyState)]);
        }"""
    )
    page.wait_for_timeout(8000)
    got = page.evaluate("() => window.got")
    assert [g for g in got if g[0] != "error"] == [["tick", "1"], ["tick", "2"], ["tick", "3"], ["done", "3"]]
    assert got[-1] == ["error", "2"]  # CLOSED: the browser has given up, as a 204 asks
    assert len(requests) <= 2, requests
