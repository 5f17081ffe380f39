"""Helpers for /bidi/ across instances: two instances on one Redis."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from shared import Hub
from shared.backends import from_url
from shared.routing import Router
from showcase import bidi
from tests.rig import LiveServer, RedisServer, wait_until


def instance(url: str, name: str, *, grace: float = 30.0) -> LiveServer:
    def build() -> Any:
        hub = Hub(from_url(url))
        return bidi.create_app(hub, grace=grace, router=Router(hub, "bidi", instance=name, beat=0.2))

    return LiveServer(build)


@contextlib.contextmanager
def two_instances(redis: RedisServer, *, grace: float = 30.0) -> Iterator[tuple[LiveServer, LiveServer]]:
    with instance(redis.url, "a", grace=grace) as a, instance(redis.url, "b", grace=grace) as b:
        routers: list[Router] = [a.app.state.router, b.app.state.router]
        wait_until(lambda: all(set(r.peers()) == {"a", "b"} for r in routers), what="the instances to see each other")
        yield a, b
