"""The Host allowlist (``shared.hosts``): what names a server answers to, and the refusal."""

from __future__ import annotations

from typing import Any

import pytest

from shared.hosts import HostCheck, allowed_hosts, host_name


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("LOCALHOST", "localhost"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("example.com.", "example.com"),
        ("Chat.Example.com:443", "chat.example.com"),
    ],
)
def test_host_name_is_the_host_part(value: str, name: str) -> None:
    assert host_name(value) == name


async def _status(check: HostCheck, host: str | None, forwarded: str | None = None) -> tuple[int, Any]:
    headers = [] if host is None else [(b"host", host.encode())]
    if forwarded is not None:
        headers.append((b"x-forwarded-host", forwarded.encode()))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await check({"type": "http", "headers": headers}, None, send)
    return sent[0]["status"], sent[-1].get("body", b"")


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:8000", "localhost:1", "[::1]:8000", "127.0.0.2", "app.localhost:8000", "LocalHost"],
)
async def test_loopback_names_are_always_allowed(host: str) -> None:
    assert await _status(HostCheck(_ok, allowed_hosts("127.0.0.1")), host) == (200, b"ok")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil", ""])
async def test_other_names_get_a_400_that_says_how_to_allow_them(host: str) -> None:
    status, body = await _status(HostCheck(_ok, allowed_hosts("127.0.0.1")), host)
    assert status == 400
    assert b"is not one of this server's names" in body
    assert b"--allowed-hosts" in body


async def test_no_host_header_is_refused() -> None:
    status, body = await _status(HostCheck(_ok, allowed_hosts("127.0.0.1")), None)
    assert status == 400
    assert b"no Host header" in body


async def test_allowed_hosts_adds_names_domains_and_any() -> None:
    check = HostCheck(_ok, allowed_hosts("127.0.0.1", ["chat.example.com", ".corp.example", "10.0.0.5:8000"]))
    for host in ("chat.example.com", "a.corp.example:8000", "corp.example", "10.0.0.5"):
        assert (await _status(check, host))[0] == 200, host
    for host in ("example.com", "evilcorp.example", "chat.example.com.evil"):
        assert (await _status(check, host))[0] == 400, host
    assert (await _status(HostCheck(_ok, allowed_hosts("127.0.0.1", ["*"])), "anything.example"))[0] == 200


async def test_the_bind_address_is_allowed_and_a_wildcard_bind_allows_the_machine() -> None:
    assert (await _status(HostCheck(_ok, allowed_hosts("192.0.2.7")), "192.0.2.7:8000"))[0] == 200
    names = allowed_hosts("0.0.0.0")
    assert "127.0.0.1" in names
    assert "evil.example" not in names


async def test_x_forwarded_host_is_checked_only_behind_a_trusted_proxy() -> None:
    plain = HostCheck(_ok, allowed_hosts("127.0.0.1"))
    proxied = HostCheck(_ok, allowed_hosts("127.0.0.1", ["chat.example.com"]), proxy_headers=True)
    assert (await _status(plain, "127.0.0.1", forwarded="evil.example"))[0] == 200  # not trusted: ignored
    assert (await _status(proxied, "127.0.0.1", forwarded="evil.example"))[0] == 400
    assert (await _status(proxied, "127.0.0.1", forwarded="chat.example.com"))[0] == 200


async def test_lifespan_passes_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await HostCheck(app, allowed_hosts("127.0.0.1"))({"type": "lifespan"}, None, None)
    assert seen == ["lifespan"]
