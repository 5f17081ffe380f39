"""Fixtures for the chat tests: an in-process app and people to talk through it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from chat import ChatSettings, create_app
from chat.session import COOKIE


class Person:
    """One signed-in user on a shared client: sends their own cookie, keeps nobody else's."""

    def __init__(self, client: httpx.Client, name: str) -> None:
        self.client = client
        r = client.post("/chat/session", json={"name": name})
        assert r.status_code == 200, r.text
        self.id: str = r.json()["id"]
        self.name = name
        self.cookie: str = r.cookies[COOKIE]
        client.cookies.clear()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        headers["Cookie"] = f"{COOKIE}={self.cookie}"
        try:
            return self.client.request(method, url, headers=headers, **kwargs)
        finally:
            self.client.cookies.clear()

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def send(self, room: str, text: str, client_msg_id: str) -> httpx.Response:
        return self.post(f"/chat/rooms/{room}/messages", json={"text": text, "client_msg_id": client_msg_id})


def chat_client(data_dir: Path, **settings: Any) -> TestClient[Any]:
    return TestClient(create_app(data_dir, settings=ChatSettings(**settings)))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient[Any]]:
    with chat_client(tmp_path) as c:
        yield c


@pytest.fixture
def alice(client: TestClient[Any]) -> Person:
    return Person(client, "alice")


@pytest.fixture
def bob(client: TestClient[Any]) -> Person:
    return Person(client, "bob")
