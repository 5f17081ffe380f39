"""Our decoder and client against Chromium's EventSource, the oracle, on the same bytes.

Every case in ``tests/conformance.py`` (the spec's edge cases: BOMs, CR/LF/CRLF mixes, empty
data, ids that clear, are not ASCII or carry NUL, ``retry:`` values the browser ignores, a 1 MB
line, chunk boundaries inside a character or a CRLF, no blank line at the end, content types) is
served byte for byte to Chromium and to :class:`shared.client.EventStream` in the same run. Both
must dispatch the same events (type, data, last event id), reconnect or not alike, send the same
``Last-Event-ID`` on the reconnect, and apply a ``retry:`` or ignore it alike. The decoder alone
must give the same events however the bytes are cut.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from playwright.sync_api import Browser

from shared.client import Backoff, EventStream, StreamError
from shared.decoder import Decoder
from tests.conformance import CASES, EVENT_TYPES, Case, CaseServer

pytestmark = pytest.mark.browser

Dispatched = list[tuple[str, str, str]]
FAST = 0.6  # s: a reconnect this soon applied `retry: 100`; defaults are 1 s (ours), 3 s (Chromium)

_CHROMIUM_JS = """
async ({names, types}) => {
  const results = {};
  await Promise.all(names.map((name) => new Promise((resolve) => {
    const got = [];
    const es = new EventSource(`/chromium/case/${name}`);
    for (const type of types) {
      es.addEventListener(type, (ev) => got.push([ev.type, ev.data, ev.lastEventId]));
    }
    const done = () => { results[name] = got; resolve(); };
    es.onerror = () => { if (es.readyState === EventSource.CLOSED) done(); };
    setTimeout(() => { es.close(); done(); }, 12000);
  })));
  return results;
}
"""


async def _our_client(url: str) -> Dispatched:
    got: Dispatched = []
    stream = EventStream(url, backoff=Backoff(retry=1.0, jitter=0.0), read_timeout=10)

    async def listen() -> None:
        async with stream:
            async for ev in stream:
                got.append((ev.event, ev.data, ev.id or ""))

    try:
        await asyncio.wait_for(listen(), timeout=15)
    except TimeoutError:
        got.append(("timeout", "still listening after 15 s", ""))
    except StreamError:
        pass  # the 204 on the reconnect (or a refused first answer): the end of the case
    except Exception as exc:  # a crash is this case's failure, not the whole run's
        got.append(("crash", repr(exc), ""))
    return got


async def _all_clients(base: str) -> dict[str, Dispatched]:
    names = [c.name for c in CASES]
    results = await asyncio.gather(*(_our_client(f"{base}/client/case/{n}") for n in names))
    return dict(zip(names, results, strict=True))


@pytest.fixture(scope="module")
def observed(browser: Browser) -> Iterator[tuple[CaseServer, dict[str, Any], dict[str, Dispatched]]]:
    with CaseServer() as server:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(server.url + "/page")
            chromium = page.evaluate(_CHROMIUM_JS, {"names": [c.name for c in CASES], "types": EVENT_TYPES})
            # Playwright's sync API holds this thread's event loop: our clients run on another.
            with ThreadPoolExecutor(1) as pool:
                ours = pool.submit(asyncio.run, _all_clients(server.url)).result()
        finally:
            context.close()
        yield server, chromium, ours


def _decode(case: Case, chunks: list[bytes]) -> Dispatched:
    decoder = Decoder()
    out = [ev for chunk in chunks for ev in decoder.feed(chunk)]
    return [(e.event, e.data, e.id or "") for e in out]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_client_dispatches_what_chromium_dispatches(
    case: Case, observed: tuple[CaseServer, dict[str, Any], dict[str, Dispatched]]
) -> None:
    server, chromium, ours = observed
    theirs = [tuple(e) for e in chromium[case.name]]
    assert ours[case.name] == theirs
    browser_seen, client_seen = server.seen[("chromium", case.name)], server.seen[("client", case.name)]
    # Both reconnect (and get the 204), or both fail the connection for good.
    assert len(client_seen.requests) == len(browser_seen.requests)
    if len(browser_seen.requests) > 1:
        # The same Last-Event-ID, byte for byte (or none when the last id is empty).
        assert client_seen.requests[1][1] == browser_seen.requests[1][1]
        browser_delay, client_delay = browser_seen.reconnect_delay(), client_seen.reconnect_delay()
        assert browser_delay is not None
        assert client_delay is not None
        assert (client_delay < FAST) == (browser_delay < FAST), (client_delay, browser_delay)


@pytest.mark.parametrize("case", [c for c in CASES if c.content_type == "text/event-stream"], ids=lambda c: c.name)
def test_decoder_gives_the_same_events_at_every_cut(case: Case) -> None:
    whole = _decode(case, [case.body])
    step = 1 if len(case.body) <= 10_000 else 4093  # every byte alone (a 1 MB line in odd pieces)
    assert _decode(case, [case.body[i : i + step] for i in range(0, len(case.body), step)]) == whole
    if len(case.body) <= 400:
        for cut in range(1, len(case.body)):
            assert _decode(case, [case.body[:cut], case.body[cut:]]) == whole, cut


# -- an off-the-shelf server: sse-starlette ------------------------------------------------------


def _sse_starlette_app() -> Any:
    """sse-starlette's ``EventSourceResponse`` with what real apps send: multi-line and empty
    data, named events, ids (one not ASCII), a comment, a retry; then the stream ends, and the
    reconnect gets 204."""
    from sse_starlette import EventSourceResponse, ServerSentEvent
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    seen: list[str | None] = []

    async def events(request: Request) -> Response:
        seen.append(request.headers.get("last-event-id"))
        if len(seen) > 1:
            return Response(status_code=204)

        async def gen() -> Any:
            yield ServerSentEvent(data="line one\nline two", id="1")
            yield ServerSentEvent(data="", event="foo")
            yield ServerSentEvent(comment="just a comment")
            yield ServerSentEvent(data='{"x": 1}', event="foo", id="café")
            yield ServerSentEvent(data="last", retry=100)

        return EventSourceResponse(gen(), ping=600)

    async def page(request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>sse-starlette</title>")

    app = Starlette(routes=[Route("/case/starlette", events), Route("/page", page)])
    app.state.seen = seen
    return app


def test_our_client_reads_sse_starlette_as_chromium_does(browser: Browser) -> None:
    from tests.rig import LiveServer

    with LiveServer(_sse_starlette_app) as browser_srv, LiveServer(_sse_starlette_app) as client_srv:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(browser_srv.url + "/page")
            js = _CHROMIUM_JS.replace("/chromium/case/", "/case/")
            chromium = page.evaluate(js, {"names": ["starlette"], "types": EVENT_TYPES})["starlette"]
        finally:
            context.close()
        with ThreadPoolExecutor(1) as pool:
            ours = pool.submit(asyncio.run, _our_client(client_srv.url + "/case/starlette")).result()
        assert ours == [tuple(e) for e in chromium]
        assert ("message", "line one\nline two", "1") in ours  # the bytes did carry events
        assert browser_srv.app.state.seen == client_srv.app.state.seen == [None, "café".encode().decode("latin-1")]


# -- the sse command on bad input ----------------------------------------------------------------


def _sse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_sse_listen_takes_any_id_the_server_sends_and_stops_on_204() -> None:
    with CaseServer() as server:
        for name in ("id-non-ascii", "id-emoji", "id-spaces", "id-with-nul", "invalid-utf8"):
            run = _sse("listen", f"{server.url}/cli/case/{name}")
            assert "Traceback" not in run.stderr, run.stderr
            assert run.returncode == 1, (name, run.stderr)  # the reconnect got 204: stop, say so
            assert "(204)" in run.stderr
            assert len(server.seen[("cli", name)].requests) == 2  # it did reconnect, with its id
        assert server.seen[("cli", "id-non-ascii")].requests[1][1] == "café".encode()
        assert server.seen[("cli", "id-spaces")].requests[1][1] == b"5"
        assert server.seen[("cli", "id-with-nul")].requests[1][1] == b"5"


def test_sse_listen_refuses_what_no_header_can_carry_in_one_line() -> None:
    with CaseServer() as server:
        run = _sse("listen", "--last-event-id", "a\nb", f"{server.url}/cli/case/simple")
        assert run.returncode == 2
        assert run.stderr.strip() == "sse listen: a last event id cannot contain CR, LF or NUL: 'a\\nb'"
        run = _sse("listen", "-H", "X-Bad: a\rb", f"{server.url}/cli/case/simple")
        assert "Traceback" not in run.stderr
        assert run.returncode == 1
        assert "cannot send the request" in run.stderr
        assert ("cli", "simple") not in server.seen  # nothing was sent, and nothing retried forever
