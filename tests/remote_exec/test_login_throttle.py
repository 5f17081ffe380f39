"""Issue 14.12 for exec: wrong log-ins are throttled per client address and audited. A flood of
wrong tokens from one address gets 429 after 10 and never locks out the operator elsewhere; each
failure is in the audit with its address, never with what was typed.

Real uvicorn with ``proxy_headers`` (as ``--proxy-headers`` behind nginx): the client address is
the ``X-Forwarded-For`` the trusted proxy (this test, on 127.0.0.1) sends."""

from __future__ import annotations

from pathlib import Path

import httpx

from remote_exec.app import create_app
from tests.rig import LiveServer

TOKEN = "throttle-operator-token-0123456789"


def test_wrong_logins_are_throttled_per_address_and_audited(tmp_path: Path) -> None:
    config = {"proxy_headers": True, "forwarded_allow_ips": "127.0.0.1"}
    server = LiveServer(lambda: create_app(tmp_path, token=TOKEN), config=config)
    with server as srv, httpx.Client(base_url=srv.url, timeout=10) as http:

        def login(token: str, addr: str) -> httpx.Response:
            return http.post("/exec/login", json={"token": token}, headers={"X-Forwarded-For": addr})

        for i in range(10):
            r = login(f"guess-{i}-{'x' * 20}", "203.0.113.7")
            assert r.status_code == 401, r.text
        throttled = login("guess-10-xxxxxxxxxxxxxxxxxxxx", "203.0.113.7")
        assert throttled.status_code == 429, throttled.text
        assert 1 <= int(throttled.headers["retry-after"]) <= 61
        assert "throttled per client address" in throttled.json()["detail"]
        # Even the right token waits at that address (no oracle while throttled)...
        assert login(TOKEN, "203.0.113.7").status_code == 429
        # ...while the operator at another address logs in at once.
        assert login(TOKEN, "198.51.100.2").status_code == 200
        entries = http.get("/exec/audit", headers={"Authorization": f"Bearer {TOKEN}"}).json()["entries"]
    failed = [e for e in entries if e["action"] == "login-failed"]
    assert len(failed) == 10
    assert {e["addr"] for e in failed} == {"203.0.113.7"}
    assert [e["addr"] for e in entries if e["action"] == "login-throttled"] == ["203.0.113.7"] * 2
    assert [e["addr"] for e in entries if e["action"] == "login"] == ["198.51.100.2"]
    assert "guess-" not in str(entries)  # what was typed is never stored
