"""The chat page, unchanged, on the Redis store: the existing browser scenarios on one Redis
instance, and two people on two instances through a Redis outage."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from playwright.sync_api import BrowserContext, expect
from playwright.sync_api import Error as PlaywrightError

from chat import ChatSettings, create_app
from tests.chat import browser_scenarios as scenarios
from tests.chat.browser_helpers import User
from tests.chat.scaleout_helpers import instances
from tests.rig import LiveServer, RedisServer

pytestmark = [pytest.mark.browser, pytest.mark.redis]

Contexts = Callable[..., BrowserContext]


@pytest.fixture
def server(redis_server: RedisServer, tmp_path: Path) -> Iterator[LiveServer]:
    settings = ChatSettings(presence_grace=1.0)
    with LiveServer(lambda: create_app(tmp_path, settings=settings, backend=redis_server.url)) as srv:
        yield srv


@pytest.mark.parametrize(
    "scenario",
    [
        scenarios.two_people_chat_both_ways,
        scenarios.offline_client_catches_up_on_everything_exactly_once,
        scenarios.server_restart_mid_conversation,
    ],
    ids=["both-ways", "offline-catch-up", "server-restart"],
)
def test_the_page_works_unchanged_on_redis(
    new_context: Contexts, server: LiveServer, scenario: Callable[[Contexts, LiveServer], Any]
) -> None:
    scenario(new_context, server)


def test_files_on_redis(new_context: Contexts, server: LiveServer, tmp_path: Path) -> None:
    scenarios.join_rules_and_file_sharing(new_context, server, tmp_path)


def test_two_instances_and_a_redis_outage(new_context: Contexts, tmp_path: Path) -> None:
    redis_server = RedisServer(aof_dir=tmp_path / "aof")
    with (
        redis_server.running(),
        instances(redis_server.url, tmp_path, ChatSettings(presence_grace=1.0)) as (one, two),
    ):
        alice = User(new_context, one, "alice")
        bob = User(new_context, two, "bob")
        expect(alice.page.locator("#online li")).to_have_count(2)
        expect(bob.page.locator("#online li")).to_have_count(2)
        bob.page.fill("#text", "typing on instance 2")
        expect(alice.page.locator("#typing")).to_have_text("bob is typing…")
        bob.page.press("#text", "Enter")
        alice.say("hello from instance 1")
        expected = ["typing on instance 2", "hello from instance 1"]
        for user in (alice, bob):
            expect(user.page.locator("#messages li.msg .text")).to_have_text(expected)

        redis_server.kill()
        alice.say("sent while Redis is down")
        expect(alice.page.locator("#outbox li")).to_have_count(1)  # refused with 503, kept, retried
        expect(alice.page.locator("#outbox li .status")).to_have_text("server unavailable, retrying…")
        alice.page.screenshot(path="/tmp/chat-redis-outage.png")
        time.sleep(3)
        redis_server.start()
        expected.append("sent while Redis is down")
        for user in (alice, bob):
            expect(user.page.locator("#messages li.msg .text")).to_have_text(expected, timeout=20_000)
            expect(user.page.locator("#outbox li")).to_have_count(0)
        bob.say("and after it")
        expected.append("and after it")
        for user in (alice, bob):
            expect(user.page.locator("#messages li.msg .text")).to_have_text(expected)
            assert user.page.locator("#conversation").get_attribute("data-resets") is None
        bob.page.screenshot(path="/tmp/chat-redis-bob.png")
        assert alice.errors == []
        assert bob.errors == []


def test_the_page_reloads_when_redis_loses_the_chat(
    new_context: Contexts, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Issue 13.3: FLUSHALL under two instances with a page open on each: both pages reload
    (reset, reason epoch), show the general room again (never room "undefined"), with the old
    messages gone, and go on talking with the same cookies."""
    with instances(redis_server.url, tmp_path, ChatSettings(presence_grace=1.0)) as (one, two):
        alice = User(new_context, one, "alice")
        bob = User(new_context, two, "bob")
        asked: list[str] = []
        for user in (alice, bob):
            user.page.on("request", lambda req: asked.append(req.url))
        alice.say("before the loss")
        for user in (alice, bob):
            expect(user.page.locator("#messages li.msg .text")).to_have_text(["before the loss"])
            user.page.evaluate("window.__beforeLoss = true")
        with redis.Redis.from_url(redis_server.url) as r:
            r.flushall()
        for user, name in ((alice, "alice"), (bob, "bob")):
            deadline = time.monotonic() + 15
            # Reloaded: the page's globals are gone. (A polled evaluate: the page's CSP refuses
            # the eval that wait_for_function uses.)
            while True:
                try:
                    if not user.page.evaluate("() => window.__beforeLoss === true"):
                        break
                except PlaywrightError:  # navigating right now: the reload is under way
                    pass
                assert time.monotonic() < deadline, "the page did not reload"
                time.sleep(0.1)
            expect(user.page.locator("#me-name")).to_have_text(name)
            expect(user.page.locator("#room-title")).to_have_text("general")
            expect(user.page.locator("#messages li.msg")).to_have_count(0)
        alice.say("after the loss")
        for user in (alice, bob):
            expect(user.page.locator("#messages li.msg .text")).to_have_text(["after the loss"])
        assert not [u for u in asked if "undefined" in u], asked
        assert alice.errors == bob.errors == []
