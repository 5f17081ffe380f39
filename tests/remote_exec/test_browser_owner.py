"""A real Chromium on /exec/ when the run's instance goes away (issue 13 part 4) and when the
page's viewer token is revoked (issue 14 part 5): what the user sees, and that the page stops
asking instead of reconnecting forever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, Request, expect

from remote_exec import create_app
from tests.remote_exec.scaleout_helpers import kill_leftovers
from tests.rig import LiveServer, RedisServer, wait_until

from .helpers import TOKEN, ExecClient, exec_server, make_policy

pytestmark = [pytest.mark.browser, pytest.mark.redis]

SHOTS = Path("/tmp")
TICKER = "import time\nfor i in range(600):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.2)\n"


@pytest.fixture
def pair(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[LiveServer, LiveServer]]:
    (tmp_path / "work").mkdir()
    policy = make_policy(tmp_path / "work")

    def node(name: str, data: Path) -> LiveServer:
        return LiveServer(
            lambda: create_app(
                data, token=TOKEN, policy=policy, backend=redis_server.url, instance=name, beat=0.3, lost_after=2.0
            )
        )

    try:
        with node("far-host-1-aaaaaa", tmp_path / "d1") as one, node("near-host-2-bbbbbb", tmp_path / "d2") as two:
            yield one, two
    finally:
        kill_leftovers(tmp_path / "d1", tmp_path / "d2")


def test_the_page_shows_a_run_whose_instance_went_away_as_unreachable_then_lost(
    page: Page, pair: tuple[LiveServer, LiveServer]
) -> None:
    one, two = pair
    with ExecClient(one.url) as c1, ExecClient(two.url) as c2:
        wait_until(lambda: len(c2.http.get("/exec/runs").json()["instances"]) == 2, what="peers")
        rid = c1.start(argv=["python3", "-c", TICKER], timeout_s=90)["id"]
    page.goto(f"{two.url}/exec/#token={TOKEN}&run={rid}")
    expect(page.locator("#out .stdout")).to_contain_text("tick 2")
    expect(page.locator("#run-status")).to_have_text("running")
    # Instance 1 leaves without ending its run (as if it hung, or its network was cut).
    assert one.server is not None
    assert one.server.loop is not None
    cluster = one.app.state.exec_app.cluster

    async def go_silent() -> None:
        assert cluster._task is not None
        cluster._task.cancel()
        await cluster.router.close()

    asyncio.run_coroutine_threadsafe(go_silent(), one.server.loop).result(10)
    expect(page.locator("#notices")).to_contain_text("is not reachable")
    expect(page.locator("#run-status")).to_have_text("lost (its server died while it ran)", timeout=10_000)
    expect(page.locator("#notices")).to_contain_text("stopped answering")
    expect(page.locator(f'#runs li[data-id="{rid}"] .exit')).to_have_text("lost (its server died while it ran)")
    expect(page.locator("#controls")).to_be_hidden()
    page.screenshot(path=str(SHOTS / "exec-owner-lost.png"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    (tmp_path / "work").mkdir()
    with exec_server(tmp_path / "data", make_policy(tmp_path / "work")) as srv:
        yield srv


def test_a_revoked_viewer_page_says_so_and_stops_reconnecting(page: Page, server: LiveServer) -> None:
    with ExecClient(server.url) as ex:
        rid = ex.start(argv=["python3", "-c", TICKER], timeout_s=90)["id"]
        minted = ex.http.post("/exec/tokens", json={"label": "guest"}).json()
        asked: list[float] = []

        def count(request: Request) -> None:
            if "/events" in request.url:
                asked.append(time.monotonic())

        page.on("request", count)
        page.goto(f"{server.url}/exec/#token={minted['token']}&run={rid}")
        expect(page.locator("#out .stdout")).to_contain_text("tick 1")
        expect(page.locator("#who")).to_contain_text("read-only")
        revoked_at = time.monotonic()
        assert ex.http.delete(f"/exec/tokens/{minted['id']}").status_code == 200
        expect(page.locator("#login")).to_be_visible(timeout=3_000)
        expect(page.locator("#login-error")).to_contain_text("Access ended")
        expect(page.locator("#login-error")).to_contain_text("revoked")
        page.wait_for_timeout(5_000)
        later = [t for t in asked if t > revoked_at]
        assert later == [], f"the page asked for a stream {len(later)} times after its token was revoked"
        page.screenshot(path=str(SHOTS / "exec-revoked.png"))
        ex.http.post(f"/exec/runs/{rid}/terminate")
