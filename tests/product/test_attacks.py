"""An attacker's requests against ``python -m showcase`` as users run it (issue 14).

DNS rebinding: a page on ``evil.example`` whose name, once loaded, resolves to 127.0.0.1. Its
requests are same-origin with itself, so the Origin check passes; only the Host header (which
names the attacker's domain) gives it away. Chromium plays the victim's browser with its Private
Network Access checks turned off (older browsers, other vendors), and a resolver rule stands in
for the attacker's DNS.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Playwright

from tests.conftest import CHROMIUM, CHROMIUM_ARGS

from .rig import DASHBOARD_TOKEN, EXEC_TOKEN, Product

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Product]:
    p = Product(Path(tmp_path_factory.mktemp("attacks")) / "data").start()
    try:
        yield p
    finally:
        p.stop()


# What the rebinding page tried and got in the report: reads and state-changing POSTs of every app.
ATTACKS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/", None),
    ("GET", "/dashboard/snapshot", None),
    ("GET", "/dashboard/audit", None),
    ("POST", "/chat/session", {"name": "mallory"}),
    ("GET", "/bidi/clients", None),
    ("POST", "/bidi/trigger", {"client_id": "victim", "params": {"cmd": "id"}}),
    ("POST", "/basics/interval", {"seconds": 0.05}),
    ("GET", "/basics/events", None),
    ("GET", "/exec/runs", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ATTACKS, ids=[f"{m} {p}" for m, p, _ in ATTACKS])
def test_a_foreign_host_is_refused_before_any_app_runs(
    product: Product, method: str, path: str, body: dict[str, Any] | None
) -> None:
    for host in ("evil.example", f"evil.example:{product.port}"):
        r = httpx.request(
            method, product.url + path, json=body, headers={"Host": host, "Origin": f"http://{host}"}, timeout=10
        )
        assert r.status_code == 400, (host, r.status_code, r.text)
        assert r.headers["content-type"] == "application/json"
        assert "'evil.example' is not one of this server's names" in r.json()["detail"]
    # The same request with the server's own names goes through the Host check.
    for host in (f"127.0.0.1:{product.port}", f"localhost:{product.port}"):
        headers = {"Host": host, "Authorization": f"Bearer {EXEC_TOKEN}"}
        with httpx.stream(method, product.url + path, json=body, headers=headers, timeout=10) as r:
            assert r.status_code != 400, (host, r.read())  # (a stream: only its head is read)


def test_an_https_origin_is_another_origin(product: Product) -> None:
    r = httpx.post(
        product.url + "/basics/interval",
        json={"seconds": 1},
        headers={"Origin": f"https://127.0.0.1:{product.port}"},
    )
    assert r.status_code == 403
    assert "https://" in r.json()["detail"]


_REBINDING_PAGE = """<!doctype html><title>cute cats</title><script>
window.results = (async () => {
  const out = {};
  const attacks = %s;
  for (const [method, path, body] of attacks) {
    try {
      const r = await fetch(path, {method, headers: body ? {"content-type": "application/json"} : {},
                                   body: body ? JSON.stringify(body) : undefined});
      out[method + " " + path] = [r.status, (await r.text()).slice(0, 300)];
    } catch (e) { out[method + " " + path] = [0, String(e)]; }
  }
  return out;
})();
</script>"""


def _rebinding_attack(playwright: Playwright, port: int, attacks: list[tuple[str, str, Any]]) -> dict[str, Any]:
    import json

    args = [
        *CHROMIUM_ARGS,
        "--host-resolver-rules=MAP evil.example 127.0.0.1",
        "--disable-features=PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,"
        "BlockInsecurePrivateNetworkRequests,LocalNetworkAccessChecks",
    ]
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
    try:
        page = browser.new_page()
        origin = f"http://evil.example:{port}"
        # The attacker's page, as first served from the attacker's address (before the rebinding).
        page.route(
            origin + "/cats.html",
            lambda route: route.fulfill(
                status=200, content_type="text/html", body=_REBINDING_PAGE % json.dumps(attacks)
            ),
        )
        page.goto(origin + "/cats.html")
        results: dict[str, Any] = page.evaluate("() => window.results")
        return results
    finally:
        browser.close()


def test_a_dns_rebinding_page_reads_and_changes_nothing(
    product: Product, playwright: Playwright, browser: Browser, tmp_path: Path
) -> None:
    # (``browser``: only so that this test runs with the other browser tests, at the end.)
    attacks = [a for a in ATTACKS if a[1] != "/basics/events"]
    before = httpx.get(product.url + "/basics/interval").json()
    results = _rebinding_attack(playwright, product.port, attacks)
    assert len(results) == len(attacks)
    for what, (status, text) in results.items():
        assert status == 400, (what, status, text)
        assert "is not one of this server's names" in text, (what, text)
    assert httpx.get(product.url + "/basics/interval").json() == before  # nothing changed
    audit = httpx.get(product.url + "/dashboard/audit", headers={"Authorization": f"Bearer {DASHBOARD_TOKEN}"})
    assert audit.status_code == 200

    # The control: a server told that evil.example is its name serves that page's requests. So the
    # attack above is real, and it is the Host check (nothing else) that stopped it.
    chat = Product(tmp_path / "chat", "--allowed-hosts", "evil.example", module="chat").start("/chat/")
    try:
        got = _rebinding_attack(playwright, chat.port, [("POST", "/chat/session", {"name": "mallory"})])
        assert got["POST /chat/session"][0] == 200, got
    finally:
        chat.stop()
