"""A cross-site request forgery attempt in a real Chromium, against a logged-in victim.

The victim's browser context is logged in to /chat/, /dashboard/ and /exec/ on the app's origin
(``http://127.0.0.1:<port>``). It then opens an attacker's page, served by a second server, which
auto-submits HTML forms (``enctype="text/plain"``, shaped so the body parses as the JSON each
endpoint takes) and sends ``fetch(..., {mode: "no-cors", credentials: "include"})`` POSTs to
post a message, change the sampling interval, and start a run.

Two attackers, one per defence layer:

- ``127.0.0.1:<other port>``: another origin but the *same site* (ports do not make sites), so
  SameSite cookies are sent; only the Origin check stands in the way.
- ``localhost:<other port>``: another site; SameSite keeps the cookies home, and the Origin
  check refuses the request anyway.

A recorder around the app notes each request as it arrived (Origin, cookie or not, body) and its
status. Afterwards: every forged request was refused with 403, nothing happened, and the same
bytes replayed without the cross-origin ``Origin`` do act, so the check is what stopped them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, get
from litestar.response import Response
from playwright.sync_api import BrowserContext

import remote_exec
from dashboard.settings import DashboardSettings
from remote_exec.settings import ExecSettings
from showcase.app import Settings, create_app
from tests.rig import LiveServer, wait_until

pytestmark = pytest.mark.browser

DASH_TOKEN = "csrf-dashboard-token-0123456789"
EXEC_TOKEN = "csrf-operator-token-0123456789"


@dataclass
class Seen:
    method: str
    path: str
    origin: str | None
    cookie: bool
    content_type: str
    body: bytes = b""
    status: int | None = None


@dataclass
class Recorder:
    """The app, unchanged, with a note of every HTTP request it got and the status it answered."""

    app: Any
    seen: list[Seen] = field(default_factory=list)

    def mounted_apps(self) -> list[Any]:
        return [self.app]  # so the rig's server still finds the hubs to close at shutdown

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        entry = Seen(
            scope["method"], scope["path"], headers.get("origin"), "cookie" in headers, headers.get("content-type", "")
        )

        # The body is read here, whole, even when the app refuses without reading it, so that
        # the test can replay exactly what the browser sent. (Small bodies only: a test rig.)
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            entry.body += message.get("body", b"")
            more = message.get("more_body", False)
        replayed = False

        async def receive_and_keep() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": entry.body, "more_body": False}
            return await receive()

        async def send_and_note(message: Any) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            await send(message)

        self.seen.append(entry)
        await self.app(scope, receive_and_keep, send_and_note)


# What the attacker wants done, one (path, JSON body) each; the form variant of a body ends in
# a string field that swallows the "=" between a text/plain form field's name and its value.
ATTACKS = {
    "chat": ("/chat/rooms/general/messages", '{"client_msg_id":"csrf-{via}","text":"pwned by {via}'),
    "dashboard": ("/dashboard/commands", '{"action":"set_interval","seconds":7,"client_id":"{via}'),
    "exec": ("/exec/runs", '{"argv":["echo","pwned by {via}"],"env":{"LANG":"{via}'),
}
CLOSERS = {"chat": '"}', "dashboard": '"}', "exec": '"}}'}


def attack_page(victim: str) -> str:
    forms, fetches = [], []
    for n, (name, (path, head)) in enumerate(ATTACKS.items()):
        form_field = head.replace("{via}", "form")
        forms.append(
            f'<iframe name="sink{n}"></iframe>'
            f'<form method="POST" action="{victim}{path}" enctype="text/plain" target="sink{n}">'
            f"<input type=\"hidden\" name='{form_field}' value='{CLOSERS[name]}'></form>"
        )
        body = head.replace("{via}", "fetch") + CLOSERS[name]
        fetches.append([victim + path, body])
    # An attacker's page has no CSP to respect: inline script is fine here.
    return f"""<!doctype html><meta charset="utf-8"><title>You won!</title>
{"".join(forms)}
<script>
for (const form of document.forms) form.submit();
const sent = {json.dumps(fetches)}.map(([url, body]) =>
  fetch(url, {{method: "POST", mode: "no-cors", credentials: "include",
               headers: {{"Content-Type": "text/plain"}}, body}}).catch(() => null));
Promise.all(sent).then(() => {{ document.title = "sent"; }});
</script>"""


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[tuple[LiveServer, Recorder]]:
    policy = remote_exec.Policy.from_dict(
        {
            "commands": {"allow": ["echo"], "shell": False},
            "cwd": {"allow": [str(tmp_path)], "default": str(tmp_path)},
            "env": {"pass": ["PATH"], "request": ["LANG"]},
        }
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        exec=ExecSettings(token=EXEC_TOKEN, policy=policy),
        dashboard=DashboardSettings(control_token=DASH_TOKEN),
    )
    recorder = Recorder(None)

    def make() -> Recorder:
        recorder.app = create_app(settings)
        return recorder

    with LiveServer(make) as srv:
        yield srv, recorder


@pytest.fixture
def attacker(victim: tuple[LiveServer, Recorder]) -> Iterator[LiveServer]:
    page = attack_page(victim[0].url)

    @get("/win.html", media_type="text/html")
    async def win() -> Response[str]:
        return Response(page, media_type="text/html")

    with LiveServer(lambda: Litestar([win], openapi_config=None)) as srv:
        yield srv


def log_in(ctx: BrowserContext, base: str) -> None:
    """The victim signs in to all three (the context keeps the cookies, as after using the pages)."""
    for path, body in (
        ("/chat/session", {"name": "victim"}),
        ("/dashboard/login", {"token": DASH_TOKEN}),
        ("/exec/login", {"token": EXEC_TOKEN}),
    ):
        assert ctx.request.post(base + path, data=body).ok, path
    names = {c["name"] for c in ctx.cookies()}
    assert {"chat_session", "dashboard_control", "exec_session"} <= names, names


def forged(recorder: Recorder, origin: str) -> list[Seen]:
    return [s for s in recorder.seen if s.origin == origin and s.method == "POST"]


def nothing_happened(base: str, cookies: dict[str, str]) -> None:
    with httpx.Client(base_url=base, cookies=cookies, timeout=10) as c:
        texts = [m["text"] for m in c.get("/chat/rooms/general/messages").json()["messages"]]
        assert not any("pwned" in t for t in texts), texts
        assert c.get("/dashboard/snapshot").json()["settings"]["interval"] == 1.0
        assert c.get("/exec/runs").json()["runs"] == []


def attack(ctx: BrowserContext, url: str) -> None:
    page = ctx.new_page()
    page.goto(url)
    wait_until(lambda: page.title() == "sent", what="the attacker's page to send its requests")


def test_same_site_other_origin_is_refused_by_the_origin_check(
    new_context: Callable[..., BrowserContext], victim: tuple[LiveServer, Recorder], attacker: LiveServer
) -> None:
    srv, recorder = victim
    ctx = new_context()
    log_in(ctx, srv.url)
    attack(ctx, attacker.url + "/win.html")
    wait_until(
        lambda: len(forged(recorder, attacker.url)) >= 6 and all(s.status for s in forged(recorder, attacker.url))
    )
    attempts = forged(recorder, attacker.url)
    assert sorted(s.path for s in attempts) == sorted([p for p, _ in ATTACKS.values()] * 2)
    for s in attempts:
        assert s.cookie, f"{s.path}: same-site, so the browser did send the victim's cookie"
        assert s.status == 403, (s.path, s.status)
    cookies = {c["name"]: c["value"] for c in ctx.cookies()}
    nothing_happened(srv.url, cookies)

    # The same bytes with the same cookies, minus the cross-origin Origin, meet the second
    # barrier: a form's text/plain is not JSON (415). Sent as JSON, they act: the two checks,
    # nothing else, are what refused them.
    with httpx.Client(base_url=srv.url, cookies=cookies, timeout=10) as c:
        for s in attempts:
            r = c.post(s.path, content=s.body, headers={"Content-Type": s.content_type})
            assert r.status_code == 415, (s.path, r.status_code, r.text)
        nothing_happened(srv.url, cookies)
        for s in attempts:
            r = c.post(s.path, content=s.body, headers={"Content-Type": "application/json"})
            assert r.status_code in (200, 201), (s.path, r.status_code, r.text)
        texts = [m["text"] for m in c.get("/chat/rooms/general/messages").json()["messages"]]
        assert {"pwned by form=", "pwned by fetch"} <= set(texts), texts
        assert c.get("/dashboard/snapshot").json()["settings"]["interval"] == 7


def test_other_site_gets_no_cookie_and_is_refused(
    new_context: Callable[..., BrowserContext], victim: tuple[LiveServer, Recorder], attacker: LiveServer
) -> None:
    srv, recorder = victim
    ctx = new_context()
    log_in(ctx, srv.url)
    other_site = attacker.url.replace("127.0.0.1", "localhost")
    attack(ctx, other_site + "/win.html")
    wait_until(lambda: len(forged(recorder, other_site)) >= 6 and all(s.status for s in forged(recorder, other_site)))
    for s in forged(recorder, other_site):
        assert not s.cookie, f"{s.path}: SameSite should have kept the cookie from a cross-site request"
        assert s.status == 403, (s.path, s.status)
    nothing_happened(srv.url, {c["name"]: c["value"] for c in ctx.cookies()})
