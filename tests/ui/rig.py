"""Opening each page of `python -m showcase` the way a user meets it, for the issue 18 checks
(layout at phone and desktop sizes, themes, keyboard journeys, axe-core, the wire view)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

from playwright.sync_api import BrowserContext, ConsoleMessage, Page, expect

from dashboard.settings import DashboardSettings
from remote_exec.settings import ExecSettings
from showcase.app import Settings, create_app
from tests.conftest import ARTIFACTS
from tests.rig import LiveServer

EXEC_TOKEN = "ui-exec-token-0123456789abcdef"
DASH_TOKEN = "ui-dash-token-0123456789"
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}
SIZES = {"phone": PHONE, "desktop": DESKTOP}
SCHEMES = ("light", "dark")

Contexts = Callable[..., BrowserContext]
_names = count(1)  # chat names are unique among the people online


@contextmanager
def showcase(data_dir: Path) -> Iterator[LiveServer]:
    settings = Settings(
        data_dir=data_dir, exec=ExecSettings(token=EXEC_TOKEN), dashboard=DashboardSettings(control_token=DASH_TOKEN)
    )
    with LiveServer(lambda: create_app(settings)) as srv:
        yield srv


@dataclass
class Console:
    """Every console error and uncaught exception a page logged."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> Page:
        page.on("console", self._message)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        return page

    def _message(self, m: ConsoleMessage) -> None:
        if m.type == "error":
            self.errors.append(f"{m.location.get('url')}: {m.text}")


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"ui-{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def overflow(page: Page) -> tuple[int, int]:
    """(scrollWidth, innerWidth) of the document: sideways scroll when the first is larger."""
    got = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    return int(got[0]), int(got[1])


def join_chat(page: Page, url: str, name: str) -> None:
    page.goto(url + "/chat/")
    page.fill("#join-name", name)
    page.press("#join-name", "Enter")
    expect(page.locator("#me-name")).to_have_text(name)
    expect(page.locator("#state")).to_have_text("open")


def log_in_exec(page: Page, url: str) -> None:
    page.goto(f"{url}/exec/#token={EXEC_TOKEN}")
    expect(page.locator("#app")).to_be_visible()


def log_in_dashboard(page: Page, url: str) -> None:
    page.goto(url + "/dashboard/")
    page.click("#login-open")
    page.fill("#login-token", DASH_TOKEN)
    page.press("#login-token", "Enter")
    expect(page.locator("#control-state")).to_have_attribute("data-mode", "control")


# Every view a user lands on: (name, how to open it). The exec page has two (login, app), chat two
# (the join dialog, a room once joined).
def views(url: str) -> dict[str, Callable[[Page], None]]:
    def plain(path: str, ready: str) -> Callable[[Page], None]:
        def open_(page: Page) -> None:
            page.goto(url + path)
            expect(page.locator(ready).first).to_be_visible()

        return open_

    return {
        "index": plain("/", "table.patterns"),
        "basics": plain("/basics/", "#log"),
        "bidi": plain("/bidi/", "#trigger"),
        "chat-join": plain("/chat/", "#join-name"),
        "chat": lambda page: join_chat(page, url, f"user{next(_names)}"),
        "dashboard": plain("/dashboard/", "#proc-rows tr"),
        "exec-login": plain("/exec/", "#token"),
        "exec": lambda page: log_in_exec(page, url),
        "basics-wire": plain("/basics/?wire=1", "#wire .wire-row"),
        "dashboard-wire": plain("/dashboard/?wire=1", "#wire .wire-row"),
    }


VIEW_NAMES = [
    *("index", "basics", "bidi", "chat-join", "chat", "dashboard", "exec-login", "exec"),
    *("basics-wire", "dashboard-wire"),  # the wire view open
]


def focused(page: Page, selector: str) -> bool:
    """Whether the element with the keyboard focus matches ``selector``."""
    return bool(page.evaluate("(s) => !!document.activeElement && document.activeElement.matches(s)", selector))


def tab_to(page: Page, selector: str, *, most: int = 80, back: bool = False) -> int:
    """Press Tab (Shift+Tab with ``back``) until the focus is on ``selector``: proof that the
    keyboard reaches it. Returns how many presses it took."""
    for n in range(1, most + 1):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        if focused(page, selector):
            return n
    raise AssertionError(f"{selector} not reached with {most} presses of {'Shift+' if back else ''}Tab")


def focus_ring(page: Page) -> str:
    """The focused element's outline (visible focus: not 'none', not 0 px)."""
    return str(
        page.evaluate(
            "() => { const s = getComputedStyle(document.activeElement);"
            " return `${s.outlineStyle} ${s.outlineWidth}`; }"
        )
    )
