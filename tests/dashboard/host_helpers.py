"""Helpers for dashboards on one Redis: an instance for a host, the hosts it sees live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from dashboard import create_app
from tests.dashboard.conftest import TOKEN
from tests.rig import LiveServer, RedisServer

BEAT = 0.3  # an instance not heard from for three beats is gone


def instance(redis: RedisServer, data_dir: Path, host: str, **kwargs: Any) -> LiveServer:
    kwargs.setdefault("interval", 0.25)
    kwargs.setdefault("rules", [])
    kwargs.setdefault("confirm_timeout", 5)

    def factory() -> Any:
        return create_app(data_dir, control_token=TOKEN, backend=redis.url, host_name=host, beat=BEAT, **kwargs)

    return LiveServer(factory)


def hosts(srv: LiveServer) -> dict[str, dict[str, Any]]:
    info = httpx.get(srv.url + "/dashboard/hosts", timeout=10).json()
    return {h["name"]: h for h in info["hosts"]}


def live(srv: LiveServer) -> set[str]:
    return {name for name, h in hosts(srv).items() if h["live"]}
