"""Any number of tabs (issue 15): one real Chromium, ``python -m showcase`` as users run it.

A browser gives an origin six HTTP/1.1 connections and each EventSource holds one for good: before,
the seventh stream of a browser waited forever (three chat tabs, then a dashboard tab did not even
load). sse.js now routes every stream of every tab through one ``GET /sse/mux``, held by a
SharedWorker, else by a leader tab (Web Locks + BroadcastChannel), else per page as before.

What the server sees is read from its access log: uvicorn logs each request it answers, with the
client's port, and the mux's topics are internal sub-requests that never appear there.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from playwright.sync_api import BrowserContext, Page, expect
from playwright.sync_api import Error as PlaywrightError

from tests.conftest import ARTIFACTS
from tests.product.rig import EXEC_TOKEN, Product
from tests.rig import RedisServer, wait_until

pytestmark = pytest.mark.browser

Contexts = Callable[..., BrowserContext]

# Every frame sse.js hands to a page, as the wire view (issue 18) sees it.
RECORD_FRAMES = """
window.__frames = [];
addEventListener("sse:frame", (e) => window.__frames.push([e.detail.url, e.detail.event, e.detail.id]));
"""
METRICS_TOKEN = "tabs-metrics-token-0123456789"
NO_SHARED_WORKER = "delete window.SharedWorker;"
NO_SHARING = "delete window.SharedWorker; delete window.BroadcastChannel; delete Navigator.prototype.locks;"


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer().running() as server:
        yield server


@pytest.fixture
def product(tmp_path: Path, redis: RedisServer) -> Iterator[Product]:
    # On Redis, every app's history survives a restart of the server: ids go on where they were.
    prod = Product(tmp_path / "data", "--backend", redis.url, "--metrics-token", METRICS_TOKEN)
    redis_flush(redis)
    prod.start()
    httpx.post(prod.url + "/basics/interval", json={"seconds": 0.2}, timeout=10).raise_for_status()
    yield prod
    prod.stop()


def redis_flush(redis: RedisServer) -> None:
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis.url)
    client.flushall()
    client.close()


def sse_requests(product: Product, since: int = 0) -> list[tuple[str, str]]:
    """``(client port, path)`` of every stream request the server answered (log offset ``since``)."""
    found = re.findall(r'127\.0\.0\.1:(\d+) - "GET (/sse/mux|/[^ ]*/events[^ ]*) HTTP', product.output()[since:])
    return [(port, path) for port, path in found]


def gauge(product: Product, name: str, label: str = "") -> float:
    text = httpx.get(product.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {label} not in /metrics")


def mux_topics(product: Product) -> int:
    return int(gauge(product, "sse_mux_topics_open"))


def crash(ctx: BrowserContext, page: Page) -> None:
    """The renderer dies: no pagehide, no unload; only the browser knows the tab is gone."""
    gone: list[Page] = []
    page.on("crash", lambda p: gone.append(p))
    with contextlib.suppress(PlaywrightError):  # the answer never comes: the page is gone
        ctx.new_cdp_session(page).send("Page.crash", timeout=2000)
    wait_until(lambda: bool(gone), what="the tab's crash")


def established_from(product: Product, port: str) -> bool:
    assert product.proc is not None
    conns = psutil.Process(product.proc.pid).net_connections(kind="tcp")
    return any(c.raddr and str(c.raddr.port) == port and c.status == psutil.CONN_ESTABLISHED for c in conns)


def frames(page: Page) -> list[list[Any]]:
    return page.evaluate("() => window.__frames")  # type: ignore[no-any-return]


def streams_heard(page: Page) -> set[str]:
    return {url.split("?")[0] for url, _, _ in frames(page)}


def heard_all(page: Page, want: set[str]) -> bool:
    return want <= streams_heard(page)


def tick_ids(page: Page) -> list[int]:
    """The numbers of the ticks a /basics/ page shows, oldest first."""
    data = page.locator("#log li.tick .data").all_text_contents()
    return [int(json.loads(d)["n"]) for d in reversed(data)]


def count(page: Page) -> int:
    return int(page.locator("#count").text_content() or 0)


def unbroken(ids: list[int]) -> bool:
    return ids == list(range(ids[0], ids[0] + len(ids)))


def start_run(product: Product, *argv: str) -> str:
    r = httpx.post(
        product.url + "/exec/runs",
        json={"argv": list(argv)},
        headers={"Authorization": f"Bearer {EXEC_TOKEN}"},
        timeout=10,
    )
    r.raise_for_status()
    return str(r.json()["id"])


def open_tabs(ctx: BrowserContext, product: Product, paths: list[str]) -> list[Page]:
    tabs: list[Page] = []
    for path in paths:
        page = ctx.new_page()
        page.goto(product.url + path)  # before: the 7th stream's page did not load at all
        tabs.append(page)
    return tabs


def join_chat(page: Page, product: Product, name: str) -> None:
    page.goto(product.url + "/chat/")
    page.fill("#join-name", name)
    page.press("#join-name", "Enter")
    expect(page.locator("#state")).to_have_text("open")


def shot(tabs: list[Page], name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for i, page in enumerate(tabs):
        page.screenshot(path=str(ARTIFACTS / f"tabs-{name}-{i + 1}.png"))


def test_twenty_tabs_of_every_app_share_one_connection(new_context: Contexts, product: Product) -> None:
    ctx = new_context()
    ctx.add_init_script(RECORD_FRAMES)
    run = start_run(product, "echo", "hello from a run")
    first = ctx.new_page()
    join_chat(first, product, "ann")  # the cookie every other chat tab of this browser shares
    login = ctx.new_page()
    login.goto(f"{product.url}/exec/#token={EXEC_TOKEN}&run={run}")
    expect(login.locator("#out")).to_contain_text("hello from a run")
    apps = ["/basics/", "/dashboard/", "/bidi/", f"/exec/#run={run}", "/chat/"]
    tabs = [first, login, *open_tabs(ctx, product, [apps[i % 5] for i in range(17)] + ["/chat/"])]
    assert len(tabs) == 20

    for page in tabs:
        if "/exec/" not in page.url:  # a finished run's badge says "ended"
            expect(page.locator("#state")).to_have_text("open")
    # Something live for every stream: a new run for the exec run lists, a message for the lobbies.
    start_run(product, "echo", "second")
    tabs[-1].fill("#text", "hello from tab 20")
    tabs[-1].press("#text", "Enter")
    mine = tabs[0].locator("#messages li.msg .text", has_text="hello from tab 20")
    expect(mine).to_have_count(1)

    wanted = {
        "/basics/": {"/basics/events"},
        "/dashboard/": {"/dashboard/events"},
        "/bidi/": {"/bidi/events"},
        "/exec/": {"/exec/events", f"/exec/runs/{run}/events"},
        "/chat/": {"/chat/events", "/chat/rooms/general/events"},
    }
    for i, page in enumerate(tabs):
        app = "/" + page.url.split("/")[3] + "/"
        want = wanted[app]
        wait_until(functools.partial(heard_all, page, want), timeout=15, what=f"tab {i + 1} {app}: every stream")
    page = tabs[0]
    page.wait_for_timeout(500)
    expect(mine).to_have_count(1)  # once, not once per tab or per stream

    streams = sse_requests(product)
    assert [path for _, path in streams] == ["/sse/mux"], streams
    assert established_from(product, streams[0][0])  # and it is still the one in use
    assert gauge(product, "sse_streams_open", 'topic_class="mux"') == 1
    assert mux_topics(product) >= 20  # (the finished run's streams were closed by their pages)
    shot([tabs[0], tabs[1], tabs[2], tabs[-1]], "twenty")


def test_leader_tab_closes_or_crashes_and_the_others_carry_on(new_context: Contexts, product: Product) -> None:
    """No SharedWorker: the first tab leads (it holds the Web Lock and the mux); it closes, the next
    crashes; each time another tab takes over and every tab resumes from its own last id."""
    ctx = new_context()
    ctx.add_init_script(NO_SHARED_WORKER)
    tabs = open_tabs(ctx, product, ["/basics/"] * 5)
    for page in tabs:
        expect(page.locator("#state")).to_have_text("open")
    wait_until(lambda: all(count(p) >= 3 for p in tabs), what="ticks on every tab")
    assert len(sse_requests(product)) == 1

    leader = tabs.pop(0)
    leader.close()  # while ticks flow
    wait_until(lambda: len(sse_requests(product)) == 2, what="a new leader's mux")
    seen = [count(p) for p in tabs]
    wait_until(lambda: all(count(p) >= n + 5 for p, n in zip(tabs, seen, strict=True)), what="ticks after hand-over")

    crash(ctx, tabs.pop(0))
    wait_until(lambda: len(sse_requests(product)) == 3, what="a mux from the leader after the crash")
    seen = [count(p) for p in tabs]
    wait_until(lambda: all(count(p) >= n + 5 for p, n in zip(tabs, seen, strict=True)), what="ticks after the crash")

    for page in tabs:
        ids = tick_ids(page)
        assert unbroken(ids), ids  # no gap, nothing twice, across both hand-overs
        assert page.locator("#resets").text_content() == "0"
    assert [path for _, path in sse_requests(product)] == ["/sse/mux"] * 3


def test_the_shared_worker_forgets_closed_and_crashed_tabs(new_context: Contexts, product: Product) -> None:
    ctx = new_context()
    tabs = open_tabs(ctx, product, ["/basics/"] * 3)
    for page in tabs:
        expect(page.locator("#state")).to_have_text("open")
    wait_until(lambda: mux_topics(product) == 3, what="three topics")
    tabs[0].close()  # pagehide: the tab says bye
    wait_until(lambda: mux_topics(product) == 2, what="the closed tab's topic dropped")
    crash(ctx, tabs[1])  # its Web Lock is released by the browser
    wait_until(lambda: mux_topics(product) == 1, what="the crashed tab's topic dropped")
    before = count(tabs[2])
    wait_until(lambda: count(tabs[2]) >= before + 3, what="ticks on the tab left")
    assert [path for _, path in sse_requests(product)] == ["/sse/mux"]


def test_without_shared_worker_a_leader_tab_relays_chat(new_context: Contexts, product: Product) -> None:
    ctx = new_context()
    ctx.add_init_script(NO_SHARED_WORKER)
    ctx.add_init_script(RECORD_FRAMES)
    first = ctx.new_page()
    join_chat(first, product, "bea")
    tabs = [first, *open_tabs(ctx, product, ["/chat/", "/basics/", "/chat/"])]
    for page in tabs:
        expect(page.locator("#state")).to_have_text("open")
    tabs[-1].fill("#text", "relayed by the leader")
    tabs[-1].press("#text", "Enter")
    for page in (tabs[0], tabs[1]):
        expect(page.locator("#messages li.msg .text", has_text="relayed by the leader")).to_have_count(1)
    assert [path for _, path in sse_requests(product)] == ["/sse/mux"]


def test_without_any_sharing_api_each_page_works_alone(new_context: Contexts, product: Product) -> None:
    ctx = new_context()
    ctx.add_init_script(NO_SHARING)
    ctx.add_init_script(RECORD_FRAMES)
    tabs = open_tabs(ctx, product, ["/basics/", "/basics/"])
    for page in tabs:
        expect(page.locator("#state")).to_have_text("open")
    wait_until(lambda: all(count(p) >= 3 for p in tabs), what="ticks on both pages")
    assert all(streams_heard(p) == {"/basics/events"} for p in tabs)
    paths = [path for _, path in sse_requests(product)]
    assert len(paths) == 2, paths
    assert all(p.startswith("/basics/events") for p in paths), paths


def test_ten_tabs_resume_once_after_offline_and_after_a_server_restart(new_context: Contexts, product: Product) -> None:
    ctx = new_context()
    ctx.add_init_script(RECORD_FRAMES)
    first = ctx.new_page()
    join_chat(first, product, "cy")
    tabs = [first, *open_tabs(ctx, product, ["/basics/", "/dashboard/", "/bidi/", "/chat/"] * 2 + ["/basics/"])]
    assert len(tabs) == 10
    chats = [p for p in tabs if "/chat/" in p.url]
    basics = [p for p in tabs if "/basics/" in p.url]

    def all_open() -> None:
        for page in tabs:
            expect(page.locator("#state")).to_have_text("open", timeout=20_000)

    def say_and_see(text: str) -> None:
        chats[-1].fill("#text", text)
        chats[-1].press("#text", "Enter")
        for page in chats:
            expect(page.locator("#messages li.msg .text", has_text=text)).to_have_count(1)

    def ticks_go_on() -> None:
        seen = [count(p) for p in basics]
        wait_until(lambda: all(count(p) >= n + 5 for p, n in zip(basics, seen, strict=True)), timeout=20, what="ticks")

    all_open()
    say_and_see("before")
    ctx.set_offline(True)
    first.wait_for_timeout(1500)
    ctx.set_offline(False)
    all_open()
    ticks_go_on()
    say_and_see("after offline")

    mark = len(product.output())
    product.signal(signal.SIGTERM)
    product.wait(30)
    product.start()
    all_open()
    ticks_go_on()
    say_and_see("after restart")
    assert [path for _, path in sse_requests(product, since=mark)] == ["/sse/mux"]  # one reconnect
    for page in basics:
        ids = tick_ids(page)
        assert unbroken(ids), ids
        assert page.locator("#resets").text_content() == "0"
    for page in chats:  # every message once, in order
        texts = page.locator("#messages li.msg .text").all_text_contents()
        assert texts == ["before", "after offline", "after restart"], texts
    shot(tabs[:3], "restarted")
