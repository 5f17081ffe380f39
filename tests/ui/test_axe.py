"""axe-core (from npm) on every page, light and dark: no serious or critical violation (issue 18).

axe.min.js comes from node_modules/axe-core (package.json devDependencies). The pages' CSP
refuses inline scripts, which is how Playwright injects one, so these contexts bypass the CSP:
what is checked is the page, not its policy (tests/system/test_web_security.py checks that)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.rig import LiveServer

from .rig import SCHEMES, VIEW_NAMES, Contexts, join_chat, log_in_dashboard, log_in_exec, showcase, views

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
# The lead's checkout has axe-core once `npm install` has run there; a helper's copy may sit in /tmp.
PLACES = (ROOT / "node_modules/axe-core/axe.min.js", Path("/tmp/axe/node_modules/axe-core/axe.min.js"))
AXE = next((p for p in PLACES if p.exists()), None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with showcase(tmp_path_factory.mktemp("ui-axe")) as srv:
        yield srv


def axe(page: Page) -> list[dict[str, Any]]:
    if AXE is None:
        pytest.fail("axe-core is not installed: run npm install (package.json lists it)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]


def describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        lines.append(f"{v['impact']} {v['id']}: {v['help']}")
        for node in v["nodes"][:6]:
            lines.append(f"    {node['target']}: {node.get('failureSummary', '').splitlines()[-1:]}")
    return "\n".join(lines)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("view", VIEW_NAMES)
def test_no_serious_violations(view: str, scheme: str, server: LiveServer, new_context: Contexts) -> None:
    page = new_context(color_scheme=scheme, bypass_csp=True).new_page()
    views(server.url)[view](page)
    page.wait_for_timeout(400)  # the first frames are in
    found = axe(page)
    if found:
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        (ROOT / "test-artifacts" / f"axe-{view}-{scheme}.json").write_text(json.dumps(found, indent=1))
    assert not found, describe(found)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_no_serious_violations_with_content(scheme: str, server: LiveServer, new_context: Contexts) -> None:
    """The same with what a session puts on screen: chat messages with a reaction and their
    buttons focused, the dashboard logged in with a row picked, exec with a pty and a pipe run."""
    found: dict[str, list[dict[str, Any]]] = {}
    page = new_context(color_scheme=scheme, bypass_csp=True).new_page()
    join_chat(page, server.url, f"axe-{scheme}")
    page.fill("#text", "hello @everyone, see https://example.org")
    page.press("#text", "Enter")
    msg = page.locator("#messages li.msg").last
    expect(msg.locator(".actions .edit")).to_have_count(1)  # the server's copy is on screen
    msg.locator(".actions .react").focus()
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    expect(msg.locator(".reaction")).to_have_count(1)
    msg.locator(".actions .edit").focus()
    found["chat"] = axe(page)

    page = new_context(color_scheme=scheme, bypass_csp=True).new_page()
    log_in_dashboard(page, server.url)
    page.locator("#proc-rows tr").first.click()
    found["dashboard"] = axe(page)

    page = new_context(color_scheme=scheme, bypass_csp=True).new_page()
    log_in_exec(page, server.url)
    page.fill("#command", "printf 'out\\n'")
    page.click("#start")
    expect(page.locator("#run-status")).to_contain_text("exit 0")
    page.fill("#command", "ls /nonexistent-dir")
    page.set_checked("#pty", False)
    page.click("#start")
    expect(page.locator("#run-status")).to_contain_text("exit")
    found["exec"] = axe(page)
    bad = {k: v for k, v in found.items() if v}
    assert not bad, "\n".join(f"{k}:\n{describe(v)}" for k, v in bad.items())
