"""Shared fixtures: Playwright on Debian's Chromium (never `playwright install`), redis-server."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.rig import RedisServer

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run ./run test (it installs it) or set CHROMIUM")
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield b
    b.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Make browser contexts (separate users: own cookies, own storage); all closed afterwards."""
    made: list[BrowserContext] = []

    def make(**kwargs: object) -> BrowserContext:
        kwargs.setdefault("viewport", {"width": 1280, "height": 800})
        ctx = browser.new_context(**kwargs)  # type: ignore[arg-type]
        ctx.set_default_timeout(10_000)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def page(new_context: Callable[..., BrowserContext], request: pytest.FixtureRequest) -> Iterator[Page]:
    p = new_context().new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    yield p
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        ARTIFACTS.mkdir(exist_ok=True)
        p.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # type: ignore[attr-defined]
    return report


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer().running() as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last, all together.

    The sync Playwright API keeps an event loop marked as running in the main thread for as long
    as the session-wide browser lives, and pytest-asyncio cannot run async tests after that. Any
    test that uses the browser is marked ``browser`` and moved to the end of the run.
    """
    # ``playwright`` too: a test may launch a browser of its own (other flags) from it.
    uses = ("browser", "playwright")
    browser_items = [i for i in items if any(f in getattr(i, "fixturenames", ()) for f in uses)]
    for item in browser_items:
        item.add_marker(pytest.mark.browser)
    others = [i for i in items if i not in browser_items]
    items[:] = others + browser_items


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A ``sleep 300`` to act on; killed afterwards whatever happened."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
