"""The two shipped nginx configs proxy alike: the plain one and the TLS + HTTP/2 one share their
upstream and `location /` verbatim, so a fix to one cannot be forgotten in the other."""

from __future__ import annotations

import re

from .nginx_rig import PLAIN, TLS


def _block(text: str, head: str) -> str:
    start = text.index(head)
    end = text.index("\n}\n" if not head.startswith(" ") else "\n    }\n", start)
    return text[start:end]


def test_tls_config_proxies_exactly_like_the_plain_one() -> None:
    plain, tls = PLAIN.read_text(), TLS.read_text()
    assert _block(plain, "upstream sse_apps {") == _block(tls, "upstream sse_apps {")
    assert _block(plain, "    location / {") == _block(tls, "    location / {")
    assert re.search(r"^\s*listen 443 ssl http2;$", tls, flags=re.M)
    assert "return 301 https://" in tls  # plain HTTP only redirects
