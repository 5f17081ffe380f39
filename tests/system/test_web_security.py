"""Web security across every app: page headers, cookie flags, constant-time token checks, no
token in the logs, and the Origin check on every state-changing request.

The cross-site attack in a real browser is in ``test_browser_cross_site.py``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from litestar import Litestar
from litestar.testing import TestClient

import chat
import dashboard
import remote_exec
from dashboard.settings import DashboardSettings
from remote_exec.settings import ExecSettings
from shared.security import RedactSecrets, bearer
from showcase import basics, bidi
from showcase.app import Settings, create_app
from tests.rig import LiveServer, free_port

ROOT = Path(__file__).resolve().parents[2]
DASH_TOKEN = "websec-dashboard-token-0123456789"
EXEC_TOKEN = "websec-operator-token-0123456789"


@pytest.fixture(scope="module")
def combined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Every app on one server, as ``python -m showcase`` serves them."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("websec"),
        exec=ExecSettings(token=EXEC_TOKEN),
        dashboard=DashboardSettings(control_token=DASH_TOKEN),
    )
    with LiveServer(lambda: create_app(settings)) as srv:
        yield srv


# -- pages ---------------------------------------------------------------------------------------


def _html_pages(app: Litestar) -> list[str]:
    """Every path whose documented answer is an HTML page."""
    schema = app.openapi_schema.to_schema()
    return [
        path + "/"
        for path, item in schema["paths"].items()
        if "text/html" in item.get("get", {}).get("responses", {}).get("200", {}).get("content", {})
    ]


def _all_pages(tmp_path: Path) -> list[str]:
    apps = [
        basics.create_app(),
        bidi.create_app(),
        chat.create_app(tmp_path, secret=b"k" * 32),
        dashboard.create_app(tmp_path, control_token=DASH_TOKEN),
        remote_exec.create_app(tmp_path, token=EXEC_TOKEN),
    ]
    return ["/", *(page for app in apps for page in _html_pages(app))]


def _csp(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name.lower()] = values
    return directives


class _InlineScripts(HTMLParser):
    """Finds what a CSP without 'unsafe-inline' would block: inline <script>, on* handlers, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script" and not named.get("src"):
            self._in_script = True
            self.found.append("<script> without src")
        self.found += [f"{tag} {k}=" for k, _ in attrs if k.startswith("on")]
        self.found += [
            f"{tag} {k}=javascript:" for k, v in attrs if (v or "").strip().lower().startswith("javascript:")
        ]


def test_every_page_sends_a_strict_csp(combined: LiveServer, tmp_path: Path) -> None:
    pages = _all_pages(tmp_path)
    assert len(pages) == 6, pages  # the index and five apps: a page missing from the schema shows here
    for page in pages:
        r = httpx.get(combined.url + page)
        assert r.status_code == 200, page
        assert r.headers["content-type"].startswith("text/html"), page
        csp = _csp(r.headers["content-security-policy"])
        script_src = csp.get("script-src", csp.get("default-src"))
        assert script_src == ["'self'"], (page, script_src)
        assert "'unsafe-inline'" not in r.headers["content-security-policy"], page
        assert "'unsafe-eval'" not in r.headers["content-security-policy"], page
        assert csp["frame-ancestors"] == ["'none'"], page
        assert csp["object-src"] == ["'none'"], page
        assert r.headers["referrer-policy"] == "no-referrer", page
        assert r.headers["x-content-type-options"] == "nosniff", page
        parser = _InlineScripts()
        parser.feed(r.text)
        assert not parser.found, (page, parser.found)


# -- cookies -------------------------------------------------------------------------------------


def _set_cookies(r: httpx.Response) -> list[str]:
    return r.headers.get_list("set-cookie")


def _assert_safe_cookie(header: str, path: str) -> None:
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in header.split(";")[1:]}
    assert "httponly" in attrs, header
    assert attrs.get("samesite", "").lower() in ("samesite=lax", "samesite=strict"), header
    # The whole origin: the shared SSE connection (/sse/mux) carries every app's streams (issue 15).
    assert attrs.get("path") == "Path=/", header


def test_login_cookies_are_httponly_samesite_and_scoped(combined: LiveServer) -> None:
    with httpx.Client(base_url=combined.url) as c:
        answers = {
            "/chat": c.post("/chat/session", json={"name": "cookie-check"}),
            "/dashboard": c.post("/dashboard/login", json={"token": DASH_TOKEN}),
            "/exec": c.post("/exec/login", json={"token": EXEC_TOKEN}),
        }
        for path, r in answers.items():
            assert r.status_code == 200, r.text
            cookies = _set_cookies(r)
            assert cookies, path
            for header in cookies:
                _assert_safe_cookie(header, path)
        # The cookies that log out are as careful (a lax one could be set from another site).
        for path, r in {
            "/chat": c.delete("/chat/session"),
            "/dashboard": c.post("/dashboard/logout"),
            "/exec": c.post("/exec/logout"),
        }.items():
            assert r.status_code < 300, r.text
            for header in _set_cookies(r):
                _assert_safe_cookie(header, path)


def test_dashboard_and_exec_cookies_are_strict(combined: LiveServer) -> None:
    """They can act on the machine: no cross-site request carries them, not even a top-level GET."""
    with httpx.Client(base_url=combined.url) as c:
        for r in (
            c.post("/dashboard/login", json={"token": DASH_TOKEN}),
            c.post("/exec/login", json={"token": EXEC_TOKEN}),
        ):
            assert all("samesite=strict" in h.lower() for h in _set_cookies(r)), _set_cookies(r)


# -- constant-time comparison ------------------------------------------------------------------------

SECRETISH = re.compile(r"token|secret|signature|password|cookie|fingerprint|\bsid\b", re.IGNORECASE)
PACKAGES = ["shared", "chat", "dashboard", "remote_exec", "showcase"]


def test_no_secret_is_compared_with_eq() -> None:
    """A ``==`` on a token returns at the first differing byte; its timing tells an attacker how
    much of a guess was right. Every comparison of a secret goes through ``tokens_equal``
    (``hmac.compare_digest``)."""
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Compare) or not any(isinstance(o, ast.Eq | ast.NotEq) for o in node.ops):
                    continue
                operands = [node.left, *node.comparators]
                if any(isinstance(o, ast.Constant) for o in operands):
                    continue  # token == "" or role == "operator": no secret on either side
                if any(SECRETISH.search(ast.unparse(o)) for o in operands):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "compare secrets with shared.security.tokens_equal:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("module", "how"),
    [
        ("dashboard/auth.py", "tokens_equal"),
        ("remote_exec/auth.py", "tokens_equal"),
        ("shared/rpc_sessions.py", "tokens_equal"),
        ("shared/rpc_pending.py", "tokens_equal"),
        ("shared/rpc_forwarding.py", "tokens_equal"),
        ("chat/session.py", "hmac.compare_digest"),
        ("shared/security.py", "hmac.compare_digest"),
    ],
)
def test_token_checks_are_constant_time(module: str, how: str) -> None:
    assert how in (ROOT / module).read_text()


# -- nothing secret in the logs ------------------------------------------------------------------------


def test_redaction_masks_query_tokens() -> None:
    import logging

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "GET", "/x?client_id=a&token=SECRET&n=1", "1.1", 200),
        None,
    )
    RedactSecrets().filter(record)
    assert "SECRET" not in record.getMessage()
    assert "client_id=a&token=[redacted]&n=1" in record.getMessage()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def _session(url: str, query: str = "") -> dict[str, Any]:
    """Open a correlation session stream, read its ``session`` event, drop it."""
    with httpx.Client(timeout=10) as c, connect_sse(c, "GET", url + query) as source:
        for sse in source.iter_sse():
            if sse.event == "session":
                data: dict[str, Any] = json.loads(sse.data)
                return data
    raise AssertionError("no session event")


def test_tokens_never_reach_the_logs(tmp_path: Path) -> None:
    """``python -m showcase`` at debug level: the two generated tokens appear in the login lines
    it prints at start (on purpose, like Jupyter) and nowhere else; no other secret appears at all,
    whatever we do with them: log in, use them as Bearer, guess wrong, resume streams with ?token=."""
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("REMOTE_EXEC_TOKEN", "DASHBOARD_CONTROL_TOKEN")}
    cmd = [
        sys.executable,
        "-m",
        "showcase",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
        "--log-level",
        "debug",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    secrets: dict[str, str] = {}
    try:
        _wait_for_port(port, proc)
        started = log_path.read_text()
        exec_token = re.search(r"Authorization: Bearer (\S+?)'", started)
        dash_token = re.search(r"Control token \(generated\): (\S+)", started)
        assert exec_token, started
        assert dash_token, started
        secrets["exec operator token"] = exec_token.group(1)
        secrets["dashboard control token"] = dash_token.group(1)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as c:
            # remote_exec: log in, use the token, mint and use a viewer token, guess wrong.
            assert c.post("/exec/login", json={"token": secrets["exec operator token"]}).status_code == 200
            secrets["exec session cookie"] = c.cookies["exec_session"]
            assert c.get("/exec/me").status_code == 200
            bearer = {"Authorization": f"Bearer {secrets['exec operator token']}"}
            assert c.post("/exec/runs", json={"argv": ["echo", "hi"]}, headers=bearer).status_code == 201
            minted = c.post("/exec/tokens", json={"label": "viewer"}, headers=bearer).json()
            secrets["exec viewer token"] = minted["token"]
            assert c.get("/exec/runs", headers={"Authorization": f"Bearer {minted['token']}"}).status_code == 200
            secrets["wrong exec token"] = secrets["exec operator token"][:-4] + "WXYZ"
            assert c.post("/exec/login", json={"token": secrets["wrong exec token"]}).status_code == 401
            assert (
                c.get("/exec/runs", headers={"Authorization": f"Bearer {secrets['wrong exec token']}"}).status_code
                == 401
            )
            # dashboard: log in, act with the token, guess wrong.
            assert c.post("/dashboard/login", json={"token": secrets["dashboard control token"]}).status_code == 200
            secrets["dashboard cookie"] = c.cookies["dashboard_control"]
            dash_bearer = {"Authorization": f"Bearer {secrets['dashboard control token']}"}
            command = {"action": "set_interval", "seconds": 1}
            assert c.post("/dashboard/commands", json=command, headers=dash_bearer).status_code == 200
            secrets["wrong dashboard token"] = secrets["dashboard control token"][:-4] + "WXYZ"
            assert c.post("/dashboard/login", json={"token": secrets["wrong dashboard token"]}).status_code == 401
            # chat: the session cookie.
            assert c.post("/chat/session", json={"name": "logcheck"}).status_code == 200
            secrets["chat session cookie"] = c.cookies["chat_session"]
            assert c.get("/chat/rooms").status_code == 200
        # Session tokens travel in the query string when a page's EventSource resumes.
        for prefix in ("/bidi", "/dashboard/session"):
            first = _session(f"{base}{prefix}/events")
            secrets[f"{prefix} session token"] = first["token"]
            again = _session(f"{base}{prefix}/events", f"?client_id={first['client_id']}&token={first['token']}")
            assert again["client_id"] == first["client_id"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    output = log_path.read_text()
    assert "GET /exec/me" in output, "the access log was not captured: this test would prove nothing"
    lines = output.splitlines()
    banner_end = next(i for i, line in enumerate(lines) if line.startswith(("INFO:", "DEBUG:")))
    banner, rest = "\n".join(lines[:banner_end]), "\n".join(lines[banner_end:])
    assert secrets["exec operator token"] in banner
    assert secrets["dashboard control token"] in banner
    leaked = [name for name, value in secrets.items() if value in rest]
    assert not leaked, f"found in the server's log: {leaked}"
    assert "token=[redacted]" in rest  # the resumed streams were logged, masked


# -- every state-changing request checks Origin ------------------------------------------------------


def _unsafe_operations(app: Litestar) -> list[tuple[str, str]]:
    schema = app.openapi_schema.to_schema()
    out = []
    for path, item in schema["paths"].items():
        for method in item:
            if method in ("post", "put", "patch", "delete"):
                out.append((method.upper(), re.sub(r"\{[^}]+\}", "1", path)))
    return out


def _app(name: str, tmp_path: Path) -> Litestar:
    """One app alone, as its ``create_app`` builds it, with the tokens these tests use."""
    return {
        "basics": lambda: basics.create_app(),
        "bidi": lambda: bidi.create_app(),
        "chat": lambda: chat.create_app(tmp_path, secret=b"k" * 32),
        "dashboard": lambda: dashboard.create_app(tmp_path, control_token=DASH_TOKEN, rules=[]),
        "exec": lambda: remote_exec.create_app(tmp_path, token=EXEC_TOKEN),
    }[name]()


@pytest.mark.parametrize("name", ["basics", "bidi", "chat", "dashboard", "exec"])
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},  # a sandboxed iframe or a file:// page
        {"Origin": "http://testserver.local:1"},  # same host name, another port: another origin
        {"Origin": "https://testserver.local"},  # same host and port, another scheme: another origin
        {"Sec-Fetch-Site": "cross-site"},
    ],
    ids=["other-site", "null", "other-port", "other-scheme", "sec-fetch-site"],
)
def test_every_state_changing_request_checks_origin(name: str, headers: dict[str, str], tmp_path: Path) -> None:
    """With valid credentials and a valid body, a cross-origin request is refused before it acts."""
    app = _app(name, tmp_path)
    operations = _unsafe_operations(app)
    assert operations
    with TestClient(app) as c:
        if name == "chat":
            c.post("/chat/session", json={"name": "origin-check"}).raise_for_status()
        auth = {"dashboard": DASH_TOKEN, "exec": EXEC_TOKEN}.get(name)
        creds = {"Authorization": f"Bearer {auth}"} if auth else {}
        for method, path in operations:
            r = c.request(method, path, json={}, headers={**creds, **headers})
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            body = r.json()
            assert body["status_code"] == 403
            assert "cross-" in body["detail"], body


# -- every state-changing request reads only the body type it documents ------------------------------


@pytest.mark.parametrize("name", ["basics", "bidi", "chat", "dashboard", "exec"])
@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
def test_every_state_changing_request_refuses_a_form_body(name: str, ctype: str | None, tmp_path: Path) -> None:
    """A cross-site ``<form>`` or no-cors fetch can send a JSON text as ``text/plain`` without a
    preflight; with valid credentials, same origin, and a valid JSON text, every route refuses it
    (415 naming the type it takes), so the Origin check is not the only barrier."""
    app = _app(name, tmp_path)
    with TestClient(app) as c:
        if name == "chat":
            c.post("/chat/session", json={"name": "type-check"}).raise_for_status()
        auth = {"dashboard": DASH_TOKEN, "exec": EXEC_TOKEN}.get(name)
        creds = {"Authorization": f"Bearer {auth}"} if auth else {}
        type_header = {"Content-Type": ctype} if ctype else {}
        for method, path in _unsafe_operations(app):
            r = c.request(
                method, path, content=b'{"text": "x", "client_msg_id": "f1"}', headers={**creds, **type_header}
            )
            assert r.status_code == 415, (method, path, r.status_code, r.text)
            body = r.json()
            assert body["status_code"] == 415
            assert "application/json" in body["detail"] or "application/octet-stream" in body["detail"], body
        if name == "chat":  # nothing was posted
            assert c.get("/chat/rooms/general/messages").json()["messages"] == []


def test_json_with_a_charset_and_bodiless_posts_still_work(tmp_path: Path) -> None:
    with TestClient(chat.create_app(tmp_path, secret=b"k" * 32)) as c:
        r = c.post(
            "/chat/session", content=b'{"name": "typed"}', headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert r.status_code in (200, 201), r.text
        r = c.post(
            "/chat/rooms/general/files",
            params={"name": "notes.txt", "client_msg_id": "f1"},
            content=b"hello",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201, r.text
        assert c.delete("/chat/session").status_code < 400  # no body, no type needed


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("BEARER abc", "abc"),
        (b"Bearer abc", "abc"),
        ("Bearer", None),
        ("Bearer    ", None),
        ("Basic YWxpY2U6eA==", None),
        ("Bearerabc", None),
        ("", None),
        (None, None),
    ],
)
def test_one_bearer_parser_for_every_app(header: str | bytes | None, token: str | None) -> None:
    assert bearer(header) == token
