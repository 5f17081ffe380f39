"""A real Chromium on /basics/: EventSource through sse.js, reconnect across a server restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from shared import Hub, MemoryBackend
from shared.apps import App
from showcase import basics
from tests.rig import LiveServer, wait_until

pytestmark = pytest.mark.browser


def _epoch(hub: Hub) -> str:
    backend = hub.backend
    assert isinstance(backend, MemoryBackend)
    return backend.epoch


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
    server.stop()  # graceful: streams get a final event with a retry hint of at most 1 s
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


def test_after_a_restart_the_reset_gives_the_browser_an_id_to_resume_from(page: Page) -> None:
    """Issue 16: a server restarted with an empty topic answers the old id with a ``reset``. It
    carries the topic's origin id, so Chromium's EventSource stops sending the old, foreign id:
    on the next reconnect it sends the new server's origin, not the id of a history long gone."""
    from litestar import Litestar, MediaType, Request, get

    from shared.responses import last_event_id, sse_response

    seen: list[str | None] = []  # Last-Event-ID of every stream request, across restarts
    hubs: list[Hub] = []

    def factory() -> Litestar:
        hub = Hub(MemoryBackend())  # a fresh history on every start
        hubs.append(hub)

        @get("/s", sync_to_thread=False)
        def stream(request: Request) -> object:  # type: ignore[type-arg]
            seen.append(request.headers.get("last-event-id"))
            return sse_response(hub, "quiet", last_id=last_event_id(request), retry_ms=200)

        @get("/", media_type=MediaType.HTML, sync_to_thread=False)
        def home() -> str:
            return "<!doctype html><title>t</title>"

        async def publish_one() -> None:
            if len(hubs) == 1:
                await hub.publish("quiet", "from the first run")

        return App(
            prefix="",
            settings=None,
            closables=[hub],  # so a stop ends the stream with `shutdown`
            route_handlers=[stream, home],
            on_startup=[hub.start, publish_one],
            on_shutdown=[hub.close],
        )

    with LiveServer(factory) as srv:
        page.goto(srv.url + "/")
        first_origin = f"{_epoch(hubs[0])}-0"  # replay from the start: the event above
        page.evaluate(
            """(origin) => { window.got = []; const es = new EventSource('/s?last_event_id=' + origin);
                 es.onmessage = (e) => got.push(['message', e.lastEventId]);
                 es.addEventListener('reset', (e) => got.push(['reset', e.lastEventId])); }""",
            first_origin,
        )
        wait_until(lambda: len(page.evaluate("got")) == 1, what="the first run's event")
        old_id = page.evaluate("got")[0][1]
        srv.restart()  # new history: the topic is empty, the browser's id is foreign
        wait_until(lambda: len(page.evaluate("got")) == 2, what="the reset")
        kind, reset_id = page.evaluate("got")[1]
        assert kind == "reset"
        assert reset_id == f"{_epoch(hubs[1])}-0"  # its origin_id()
        srv.restart()
        wait_until(lambda: len(seen) >= 3, what="the reconnect after the second restart")
    assert seen[:3] == [None, old_id, reset_id]  # the old id was sent once, then the reset's
