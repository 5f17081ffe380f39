"""Attacks on the chat (issue 14), each against a real server, each refused with a 4xx JSON
naming the rule: session fixation and sign-out (part 6)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat import ChatSettings, create_app
from chat.session import COOKIE
from tests.rig import LiveServer, RedisServer

MESSAGES = "/chat/rooms/general/messages"


def call(base: str, method: str, path: str, cookie: str | None = None, **kwargs: Any) -> httpx.Response:
    """One request with exactly this cookie (or none): no jar that could mix people up."""
    headers = dict(kwargs.pop("headers", None) or {})
    if cookie is not None:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    with httpx.Client(base_url=base, timeout=10) as c:
        return c.request(method, path, headers=headers, **kwargs)


def join(base: str, name: str, cookie: str | None = None) -> tuple[str, str]:
    """Join (with whatever cookie the browser holds): the user id and the cookie set."""
    r = call(base, "POST", "/chat/session", cookie, json={"name": name})
    assert r.status_code == 200, r.text
    return r.json()["id"], r.cookies[COOKIE]


def refused_as_revoked(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["status_code"] == 401
    assert "signed out or replaced" in body["detail"]


@contextlib.contextmanager
def chat_server(data_dir: Path, **settings: Any) -> Iterator[str]:
    with LiveServer(lambda: create_app(data_dir, settings=ChatSettings(**settings))) as srv:
        yield srv.url


# -- part 6: session fixation, sign-out ----------------------------------------------------------


def test_a_planted_cookie_is_replaced_on_join_and_the_planter_locked_out(tmp_path: Path) -> None:
    with chat_server(tmp_path) as base:
        # The attacker joins, then plants their cookie in the victim's browser (a page on another
        # port of 127.0.0.1 may set cookies for this one).
        _, planted = join(base, "mallory")
        victim_id, victim_cookie = join(base, "victim", cookie=planted)
        assert victim_cookie != planted
        r = call(base, "POST", MESSAGES, victim_cookie, json={"text": "my secret plan", "client_msg_id": "v1"})
        assert r.status_code == 201, r.text
        message = r.json()
        assert message["author_id"] == victim_id
        # The attacker's copy of the cookie is dead: no edit, no post, no reading.
        r = call(base, "PATCH", f"{MESSAGES}/{message['id']}", planted, json={"text": "edited by mallory"})
        refused_as_revoked(r)
        refused_as_revoked(call(base, "POST", MESSAGES, planted, json={"text": "as victim", "client_msg_id": "m1"}))
        refused_as_revoked(call(base, "GET", "/chat/session", planted))
        # ...nor can it sign the victim out (and free their name).
        assert call(base, "DELETE", "/chat/session", planted).status_code == 204
        assert call(base, "GET", "/chat/session", victim_cookie).json()["name"] == "victim"
        r = call(base, "GET", MESSAGES, victim_cookie)
        assert [m["text"] for m in r.json()["messages"]] == ["my secret plan"]


def test_signing_out_revokes_the_cookie_even_after_a_restart(tmp_path: Path) -> None:
    with chat_server(tmp_path) as base:
        _, cookie = join(base, "alice")
        assert call(base, "GET", "/chat/rooms", cookie).status_code == 200
        assert call(base, "DELETE", "/chat/session", cookie).status_code == 204
        refused_as_revoked(call(base, "GET", "/chat/rooms", cookie))
        refused_as_revoked(call(base, "POST", MESSAGES, cookie, json={"text": "ghost", "client_msg_id": "g1"}))
        # Joining again from that browser is a fresh start, not the old session back.
        _, fresh = join(base, "alice", cookie=cookie)
        assert call(base, "GET", "/chat/session", fresh).status_code == 200
    with chat_server(tmp_path) as base:  # the same data dir: the cookies are still signed right
        refused_as_revoked(call(base, "GET", "/chat/rooms", cookie))
        assert call(base, "GET", "/chat/session", fresh).status_code == 200


def test_renaming_keeps_the_person_but_not_the_cookie(tmp_path: Path) -> None:
    with chat_server(tmp_path) as base:
        alice_id, cookie = join(base, "alice")
        renamed_id, renamed = join(base, "alicia", cookie=cookie)
        assert renamed_id == alice_id
        refused_as_revoked(call(base, "GET", "/chat/session", cookie))
        assert call(base, "GET", "/chat/session", renamed).json() == {"id": alice_id, "name": "alicia"}


@pytest.mark.redis
def test_a_sign_out_on_one_instance_holds_on_every_other(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = ChatSettings()

    def app(d: Path) -> Any:
        return create_app(d, settings=settings, backend=redis_server.url)

    with LiveServer(lambda: app(tmp_path / "a")) as a, LiveServer(lambda: app(tmp_path / "b")) as b:
        _, cookie = join(a.url, "alice")
        assert call(b.url, "GET", "/chat/rooms", cookie).status_code == 200
        assert call(a.url, "DELETE", "/chat/session", cookie).status_code == 204
        refused_as_revoked(call(b.url, "GET", "/chat/rooms", cookie))
        # A join on one instance revokes the cookie it came with on the other too.
        _, planted = join(b.url, "mallory")
        _, mine = join(a.url, "bob", cookie=planted)
        refused_as_revoked(call(b.url, "GET", "/chat/session", planted))
        assert call(b.url, "GET", "/chat/session", mine).json()["name"] == "bob"
