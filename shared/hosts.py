"""The ``Host`` allowlist: refuse requests addressed to a name that is not this server's.

Why: the Origin check (``shared.security``) compares a POST's ``Origin`` with its ``Host``. A page
on a DNS-rebinding domain (``evil.example`` first resolving to the attacker, then to 127.0.0.1)
is same-origin with itself, so both say ``evil.example`` and the check passes; its reads (GETs)
are not checked at all. What such a request cannot fake is the ``Host`` header the browser sends:
it names the attacker's domain. So every request whose Host is not one of this server's names is
refused with a JSON 400 before any app sees it.

The names: loopback (``localhost``, ``*.localhost``, 127.0.0.0/8, ``::1``), the address the server
binds, and what ``--allowed-hosts`` adds (``name``, ``.example.com`` for it and every subdomain,
or ``*`` for any). A server bound to a wildcard (``0.0.0.0``, ``::``) also answers to the
machine's own addresses and host name. IP literals are always safe to allow: a rebinding attack
needs a domain name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
from collections.abc import Iterable
from typing import Any

__all__ = ["HostCheck", "allowed_hosts", "host_name"]

_LOOPBACK_NAMES = frozenset({"localhost"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def host_name(value: str) -> str:
    """The host part of a ``Host`` header value (no port, no brackets, lower case, no final dot)."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _machine_names() -> set[str]:
    names: set[str] = set()
    with contextlib.suppress(OSError):
        names.add(socket.gethostname().lower())
        names.add(socket.getfqdn().lower())
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            for addr in addrs:
                if addr.family in (socket.AF_INET, socket.AF_INET6):
                    names.add(addr.address.split("%", 1)[0].lower())
    except Exception:  # pragma: no cover - psutil is a dependency; be safe on odd platforms
        pass
    return names


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a server bound to ``bind`` answers to, plus ``extra`` (``--allowed-hosts``)."""
    names = set(_LOOPBACK_NAMES)
    bind = host_name(bind)
    if bind in _WILDCARDS:
        names |= _machine_names()
    else:
        names.add(bind)
    for item in extra:
        item = item.strip().lower()
        if item:
            names.add(item if item in ("*",) or item.startswith(".") else host_name(item))
    return frozenset(names)


class HostCheck:
    """ASGI middleware: a request whose ``Host`` (and, behind a trusted proxy, whose
    ``X-Forwarded-Host``) is not allowed gets 400 JSON naming the rule, before the app runs.

    ``mounted_apps``/``app`` are kept visible, so the server still finds every app's hubs.
    """

    def __init__(self, app: Any, allowed: Iterable[str], *, proxy_headers: bool = False) -> None:
        self.app = app
        self.allowed = frozenset(allowed)
        self._any = "*" in self.allowed
        self._suffixes = tuple(a for a in self.allowed if a.startswith("."))
        self.proxy_headers = proxy_headers

    def allows(self, value: str) -> bool:
        if self._any:
            return True
        name = host_name(value)
        if not name:
            return False
        if name in self.allowed or name.endswith(".localhost"):
            return True
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(name).is_loopback:
                return True
        return any(name.endswith(s) or name == s[1:] for s in self._suffixes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            bad = self._refused(scope)
            if bad is not None:
                await self._refuse(scope, send, bad)
                return
        await self.app(scope, receive, send)

    def _refused(self, scope: dict[str, Any]) -> str | None:
        host = forwarded = None
        for key, value in scope.get("headers", ()):
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"x-forwarded-host" and self.proxy_headers:
                forwarded = value.decode("latin-1").split(",")[0]
        if host is None:
            return "the request has no Host header"
        for value in (host, forwarded):
            if value is not None and not self.allows(value):
                return (
                    f"Host {host_name(value)!r} is not one of this server's names; requests for other names are "
                    "refused (DNS rebinding protection). If this is a name of yours, start the server with "
                    f"--allowed-hosts {host_name(value)}"
                )
        return None

    async def _refuse(self, scope: dict[str, Any], send: Any, detail: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"status_code": 400, "detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
