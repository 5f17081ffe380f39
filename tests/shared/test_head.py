"""HEAD on pages and event streams answers what GET would, without a body, at once."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from dashboard.settings import DashboardSettings
from remote_exec.settings import ExecSettings
from shared import Hub
from shared.apps import shutdown_groups
from showcase.app import Settings, create_app
from tests.rig import LiveServer, wait_until

TOKEN = "head-test-operator-token-0123456789"


@pytest.fixture(scope="module")
def combined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("head"),
        exec=ExecSettings(token=TOKEN),
        dashboard=DashboardSettings(control_token=TOKEN),
    )
    with LiveServer(lambda: create_app(settings)) as srv:
        yield srv


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/", "text/html"),
        ("/chat/", "text/html"),
        ("/dashboard/", "text/html"),
        ("/exec/", "text/html"),
        ("/basics/events", "text/event-stream"),
        ("/dashboard/events", "text/event-stream"),
        ("/bidi/events?client_id=head", "text/event-stream"),
    ],
)
def test_head_answers_like_get_without_a_body(combined: LiveServer, path: str, ctype: str) -> None:
    start = time.monotonic()
    r = httpx.head(combined.url + path, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(ctype)
    assert r.content == b""
    assert time.monotonic() - start < 3  # a stream's HEAD does not hang on the stream


def test_head_keeps_the_connection_usable_and_releases_the_stream(combined: LiveServer) -> None:
    """On one keep-alive connection: HEAD of a stream, then a GET answered normally; the hub
    keeps no subscriber for the HEAD."""
    with socket.create_connection(("127.0.0.1", combined.port), timeout=5) as sock:
        sock.sendall(b"HEAD /basics/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            got += sock.recv(4096)
        assert got.startswith(b"HTTP/1.1 200"), got
        sock.sendall(b"GET /basics/interval HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        while chunk := sock.recv(65536):
            got += chunk
    assert got.count(b"HTTP/1.1 200") == 2, got
    hubs = [hub for group in shutdown_groups(combined.app) for hub in group if isinstance(hub, Hub)]
    assert hubs
    wait_until(lambda: all(h.stats()["subscribers"] == 0 for h in hubs), what="no subscriber left")


def test_head_of_an_unknown_path_is_404(combined: LiveServer) -> None:
    assert httpx.head(combined.url + "/nope", timeout=5).status_code == 404
