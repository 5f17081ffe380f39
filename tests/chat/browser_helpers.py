"""Helpers for the chat's browser tests: a person in a browser context (User)."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import BrowserContext, expect

from tests.rig import LiveServer

Contexts = Callable[..., BrowserContext]


class User:
    """A person in their own browser context (own cookies), with the chat open."""

    def __init__(self, new_context: Contexts, server: LiveServer, name: str) -> None:
        self.context = new_context()
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(server.url + "/chat/")
        self.page.fill("#join-name", name)
        self.page.click("#join-form button[type=submit]")
        expect(self.page.locator("#me-name")).to_have_text(name)
        expect(self.page.locator("#state")).to_have_text("open")

    @property
    def texts(self) -> list[str]:
        return self.page.locator("#messages li.msg .text").all_text_contents()

    def say(self, text: str) -> None:
        self.page.fill("#text", text)
        self.page.press("#text", "Enter")
