"""Issue 15: behind a real nginx with TLS and HTTP/2, 30 tabs of one browser stream at once over
one connection, unbuffered, and resume through the proxy across a rolling restart.

Debian's nginx runs the shipped ``deploy/nginx/sse-tls.conf`` (addresses, port and a throw-away
certificate filled in) in front of two ``python -m showcase`` instances on one redis-server.
Chromium reaches it as ``https://chat.example.com:PORT`` (a host-resolver rule, the certificate
accepted for the test). Each tab opens its own EventSource here (an init script takes away
SharedWorker, Web Locks and BroadcastChannel, which sse.js would otherwise use to share one
stream per browser): over HTTP/1.1 the seventh tab would wait forever; over HTTP/2 they all live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, Playwright

from shared.client import Backoff, SyncEventStream
from tests.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.rig import wait_until

from .nginx_rig import HOST, TLS, Nginx
from .nginx_rig import edge as two_instances
from .rig import Product

pytestmark = [pytest.mark.slow, pytest.mark.redis]

TABS = 30
# Every tab on its own EventSource (see the module docstring).
ALONE = "delete window.SharedWorker; delete window.BroadcastChannel; delete Navigator.prototype.locks;"


class Reader(threading.Thread):
    """A Python client through nginx (TLS): the reference list of tick ids."""

    def __init__(self, url: str, port: int) -> None:
        super().__init__(daemon=True)
        self.url, self.port = url, port
        self.ids: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Host": f"{HOST}:{self.port}"}
        with (
            httpx.Client(verify=False, headers=headers, timeout=httpx.Timeout(10, read=30)) as client,
            SyncEventStream(self.url + "/basics/events", client=client, backoff=Backoff(retry=0.2)) as events,
        ):
            for ev in events:
                if ev.event == "tick" and ev.id:
                    self.ids.append(ev.id)
                if self.stop.is_set():
                    return


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[tuple[Nginx, list[Product]]]:
    with two_instances(tmp_path, 1, shipped=TLS, tls=True) as rig:
        yield rig


def _count(page: Page) -> int:
    return int(page.locator("#count").text_content() or "0")


def _ids(page: Page) -> list[str]:
    """The tick ids the tab shows, oldest first (the log prepends)."""
    ids = page.eval_on_selector_all("#log li.tick span.id", "els => els.map(e => e.textContent)")
    return list(reversed(ids))


@pytest.mark.timeout(240)
def test_thirty_tabs_over_one_http2_connection_through_nginx(
    edge: tuple[Nginx, list[Product]], playwright: Playwright
) -> None:
    nginx, products = edge
    origin = f"https://{HOST}:{nginx.port}"
    reader = Reader(nginx.url, nginx.port)
    reader.start()
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {HOST} 127.0.0.1"], headless=True
    )
    try:
        ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1000, "height": 700})
        ctx.set_default_timeout(15_000)
        ctx.add_init_script(ALONE)
        tabs = []
        for _ in range(TABS):
            page = ctx.new_page()
            page.goto(origin + "/basics/")
            tabs.append(page)
        wait_until(lambda: all(_count(p) >= 1 for p in tabs), 30, "a tick on every tab")
        assert [p.locator("#state").text_content() for p in tabs] == ["open"] * TABS

        # Unbuffered: at 4 ticks a second each tab sees them as they are made, not in bursts.
        with httpx.Client(verify=False, headers={"Host": f"{HOST}:{nginx.port}", "Origin": origin}) as http:
            assert http.post(nginx.url + "/basics/interval", json={"seconds": 0.25}).status_code == 200
        time.sleep(0.5)
        before = [_count(p) for p in (tabs[0], tabs[-1])]
        time.sleep(2)
        after = [_count(p) for p in (tabs[0], tabs[-1])]
        assert all(a - b >= 5 for a, b in zip(after, before, strict=True)), (before, after)

        # A rolling restart: each instance in turn stops (its streams end with `shutdown`), and
        # every tab's EventSource resumes through nginx on the other, from its Last-Event-ID.
        restart_at = len(reader.ids)
        for product in products:
            product.stop()
            product.start(ready_path="/readyz")
        counts = [_count(p) for p in tabs]
        try:
            ticking = lambda: all(_count(p) >= c + 4 for p, c in zip(tabs, counts, strict=True))  # noqa: E731
            wait_until(ticking, 30, "every tab ticking again")
        except AssertionError:
            states = [(p.locator("#state").text_content(), c, _count(p)) for p, c in zip(tabs, counts, strict=True)]
            log = nginx.errors().splitlines()
            raise AssertionError(f"(state, count then, now) per tab: {states}\n{log[:10]}\n{log[-10:]}") from None
        ARTIFACTS.mkdir(exist_ok=True)
        tabs[-1].screenshot(path=str(ARTIFACTS / "http2-proxy-tab30.png"))
        assert [p.locator("#state").text_content() for p in tabs] == ["open"] * TABS
        assert [p.locator("#resets").text_content() for p in tabs] == ["0"] * TABS
        reader.stop.set()
        reference = reader.ids
        assert len(reference) > restart_at + 4, "the Python reader did not carry on through the restarts"
        for page in (tabs[0], tabs[TABS // 2], tabs[-1]):
            shown = _ids(page)
            assert len(set(shown)) == len(shown), "a tab showed a tick twice"
            start = reference.index(shown[0])
            # No gap, no duplicate: exactly the run of ids the reference reader saw.
            assert shown == reference[start : start + len(shown)]
    finally:
        browser.close()

    # One HTTP/2 connection carried every stream of the browser (the Python reader's is HTTP/1.1).
    streams = [line for line in nginx.access() if " /basics/events HTTP/2.0 " in line]
    connections = {line.rsplit(" ", 1)[1] for line in streams}
    assert len(streams) >= 2 * TABS, f"{len(streams)} stream requests over HTTP/2"
    assert len(connections) == 1, connections
    assert not [line for line in nginx.access() if line.startswith("5")], "nginx answered a client with a 5xx"
    print(f"\nHTTP/2 edge: {TABS} tabs, {len(streams)} stream requests (restarts too), {len(connections)} connection")
