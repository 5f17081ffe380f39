"""Every app answers every bad request with a clear 4xx in one JSON shape:
``{"status_code": <the status>, "detail": "<what is wrong>", ...}``, as ``application/json``.

Malformed JSON, wrong types, invalid UTF-8, 1 MiB bodies, deep nesting, unknown and missing
fields, empty bodies, unknown routes, wrong methods, and errors from SSE endpoints alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

import chat
import dashboard
import remote_exec
from shared.errors import JSONRequest, error_handlers
from showcase import basics, bidi

MIB = 1024 * 1024
DASH_TOKEN = "shape-dashboard-token-0123456789"
EXEC_TOKEN = "shape-operator-token-0123456789"


@dataclass(frozen=True)
class Target:
    """An app and one of its JSON endpoints, with a body it accepts and the credentials it needs."""

    name: str
    make: Callable[[Path], Litestar]
    url: str
    valid: dict[str, Any]
    headers: dict[str, str]
    prefix: str
    stream: str  # an SSE endpoint that refuses a request without credentials (or with bad ones)


TARGETS = [
    Target("basics", lambda _: basics.create_app(), "/basics/interval", {"seconds": 1}, {}, "/basics", ""),
    Target(
        "bidi",
        lambda _: bidi.create_app(),
        "/bidi/trigger",
        {"client_id": "nobody", "timeout_s": 1},
        {},
        "/bidi",
        "/bidi/events?client_id=bad%20id",
    ),
    Target(
        "chat",
        lambda d: chat.create_app(d, secret=b"k" * 32),
        "/chat/rooms",
        {"name": "ok"},
        {},
        "/chat",
        "/chat/events",
    ),
    Target(
        "dashboard",
        lambda d: dashboard.create_app(d, control_token=DASH_TOKEN, rules=[]),
        "/dashboard/commands",
        {"action": "set_interval", "seconds": 2},
        {"Authorization": f"Bearer {DASH_TOKEN}"},
        "/dashboard",
        "/dashboard/session/events?client_id=bad%20id",
    ),
    Target(
        "exec",
        lambda d: remote_exec.create_app(d, token=EXEC_TOKEN),
        "/exec/runs",
        {"argv": ["true"]},
        {"Authorization": f"Bearer {EXEC_TOKEN}"},
        "/exec",
        "/exec/events",
    ),
]


@pytest.fixture(params=TARGETS, ids=[t.name for t in TARGETS])
def target(request: pytest.FixtureRequest) -> Target:
    t: Target = request.param
    return t


@pytest.fixture
def client(target: Target, tmp_path: Path) -> Iterator[TestClient[Any]]:
    with TestClient(target.make(tmp_path)) as c:
        if target.name == "chat":
            c.post("/chat/session", json={"name": "shape"}).raise_for_status()  # the cookie stays in c
        yield c


def assert_error(r: httpx.Response, status: int | set[int], *words: str) -> dict[str, Any]:
    """The one error shape; ``words`` must appear in the detail (it names the problem)."""
    allowed = {status} if isinstance(status, int) else status
    assert r.status_code in allowed, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert r.headers["x-content-type-options"] == "nosniff", r.headers  # errors too carry the headers
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"], r.headers
    body = r.json()
    assert isinstance(body, dict)
    assert body["status_code"] == r.status_code
    assert isinstance(body["detail"], str)
    assert body["detail"].strip()
    for word in words:
        assert word.lower() in body["detail"].lower(), (word, body["detail"])
    return body


def post(client: TestClient[Any], target: Target, content: bytes) -> httpx.Response:
    headers = {**target.headers, "Content-Type": "application/json"}
    return client.post(target.url, content=content, headers=headers)


def test_the_valid_body_is_accepted(client: TestClient[Any], target: Target) -> None:
    """The baseline for every test below: the only difference there is the broken body."""
    r = post(client, target, json.dumps(target.valid).encode())
    assert r.status_code < 500, r.text
    assert r.status_code not in (400, 413, 422), r.text


def test_malformed_json(client: TestClient[Any], target: Target) -> None:
    assert_error(post(client, target, b'{"seconds": 1,'), 400, "not valid JSON")


def test_invalid_utf8(client: TestClient[Any], target: Target) -> None:
    body = json.dumps(target.valid).encode().replace(b"}", b', "x": "\xff\xfe"}')
    assert_error(post(client, target, body), 400, "UTF-8")


def test_deeply_nested_json(client: TestClient[Any], target: Target) -> None:
    depth = 3000  # 6 KB: under every body limit, far over any nesting the apps accept
    body = b'{"x": ' + b"[" * depth + b"]" * depth + b"}"
    assert_error(post(client, target, body), 400, "nested too deeply")


def test_one_mib_body_is_413(client: TestClient[Any], target: Target) -> None:
    body = json.dumps({**target.valid, "pad": "x" * MIB}).encode()
    assert_error(post(client, target, body), 413, "too large", "KiB")


def test_unknown_field(client: TestClient[Any], target: Target) -> None:
    body = json.dumps({**target.valid, "surprise": 1}).encode()
    assert_error(post(client, target, body), {400, 422}, "surprise")


def test_missing_field(client: TestClient[Any], target: Target) -> None:
    first = next(iter(target.valid))
    body = json.dumps({k: v for k, v in target.valid.items() if k != first}).encode()
    assert_error(post(client, target, body), {400, 422}, first)


def test_wrong_type(client: TestClient[Any], target: Target) -> None:
    first = next(iter(target.valid))
    body = json.dumps({**target.valid, first: {"not": "this"}}).encode()
    assert_error(post(client, target, body), {400, 422}, first)


def test_not_an_object(client: TestClient[Any], target: Target) -> None:
    assert_error(post(client, target, b"[1, 2, 3]"), {400, 422})


def test_empty_body(client: TestClient[Any], target: Target) -> None:
    assert_error(post(client, target, b""), 400, "body")


def test_unknown_route_is_404(client: TestClient[Any], target: Target) -> None:
    assert_error(client.get(target.prefix + "/no/such/thing", headers=target.headers), 404)
    assert_error(client.get(target.prefix + "/static/no-such-file.js"), 404)


def test_wrong_method_is_405_with_allow(client: TestClient[Any], target: Target) -> None:
    r = client.put(target.url, headers=target.headers)
    assert_error(r, 405)
    assert "POST" in r.headers["allow"]


STREAMS = [t for t in TARGETS if t.stream]


@pytest.mark.parametrize("target", STREAMS, ids=[t.name for t in STREAMS])
def test_errors_from_streams_are_json(client: TestClient[Any], target: Target) -> None:
    """Not ``text/event-stream``, which the handler would otherwise label them."""
    client.cookies.clear()
    assert_error(client.get(target.stream), {400, 401})


@pytest.mark.parametrize(
    ("target", "path"),
    [(TARGETS[0], "/basics/interval"), (TARGETS[2], "/chat/rooms"), (TARGETS[4], "/exec/runs")],
    ids=["basics", "chat", "exec"],
)
def test_the_options_answer_lists_every_method(client: TestClient[Any], path: str) -> None:
    """litestar-org/litestar#4169: Litestar 2 lists only the first handler's methods."""
    allow = {m.strip() for m in client.options(path).headers["allow"].split(",")}
    assert {"GET", "POST", "OPTIONS"} <= allow


def test_chat_uploads_keep_their_own_limit(tmp_path: Path) -> None:
    """JSON bodies stop at 64 KiB; a shared file may be up to 10 MiB."""
    with TestClient(chat.create_app(tmp_path, secret=b"k" * 32)) as c:
        c.post("/chat/session", json={"name": "uploader"}).raise_for_status()
        big = b"\x00" * MIB
        r = c.post(
            "/chat/rooms/general/files",
            params={"name": "big.bin", "client_msg_id": "u1"},
            content=big,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["file"]["size"] == MIB
        r = c.post(
            "/chat/rooms/general/messages",
            content=b'{"text": "' + b"x" * 70_000 + b'", "client_msg_id": "m"}',
            headers={"Content-Type": "application/json"},
        )
        assert_error(r, 413, "64 KiB")


def test_an_unexpected_error_is_a_logged_json_500() -> None:
    @get("/boom")
    async def boom() -> None:
        raise RuntimeError("the disk caught fire")

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    app = Litestar([boom], exception_handlers=error_handlers(), request_class=JSONRequest)
    log = logging.getLogger("shared.errors")
    log.addHandler(handler)
    try:
        with TestClient(app) as c:
            r = c.get("/boom")
    finally:
        log.removeHandler(handler)
    body = assert_error(r, 500)
    assert "fire" not in body["detail"]  # internals stay in the log
    assert any(rec.exc_info and "the disk caught fire" in str(rec.exc_info[1]) for rec in records)


@pytest.mark.parametrize(
    ("target", "method", "path", "body"),
    [
        # Found by schemathesis: ?before= past SQLite's 64-bit INTEGER was an OverflowError, a 500.
        (TARGETS[3], "GET", f"/dashboard/audit?before={2**70}", None),
        (TARGETS[3], "GET", f"/dashboard/audit?limit={2**70}", None),
        (TARGETS[2], "GET", f"/chat/rooms/general/messages?before={2**70}", None),
        (TARGETS[2], "PATCH", f"/chat/rooms/general/messages/{2**70}", {"text": "x"}),
        (TARGETS[2], "POST", "/chat/rooms/general/read", {"id": 2**70}),
        (TARGETS[4], "GET", f"/exec/runs?limit={2**70}", None),
        (TARGETS[4], "GET", f"/exec/audit?limit={2**70}", None),
    ],
    ids=[
        "dashboard-audit-before",
        "dashboard-audit-limit",
        "chat-history",
        "chat-edit",
        "chat-read",
        "exec-runs",
        "exec-audit",
    ],
)
def test_huge_integers_never_crash(
    client: TestClient[Any], target: Target, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """Refused, or clamped (the chat reads "before 2**70" as "the newest"); never a 500."""
    r = client.request(method, path, json=body, headers=target.headers)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert_error(r, r.status_code)
