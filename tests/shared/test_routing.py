"""Instance-to-instance calls (shared.routing): local with memory, across processes' hubs on Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from litestar.exceptions import NotFoundException

from shared import Hub
from shared.backends import from_url
from shared.problems import Problem
from shared.routing import Router
from tests.rig import RedisServer


async def echo(params: Any) -> Any:
    return {"echo": params}


async def missing(params: Any) -> Any:
    raise NotFoundException(f"no run {params!r}")


async def stuck(params: Any) -> Any:
    await asyncio.sleep(30)


def make_router(hub: Hub, name: str) -> Router:
    router = Router(hub, "test", instance=name, meta={"host": f"host-{name}"}, beat=0.2)
    router.handle("echo", echo)
    router.handle("missing", missing)
    router.handle("stuck", stuck)
    return router


async def test_with_one_instance_a_call_is_a_local_call_with_the_same_errors() -> None:
    async with Hub() as hub:
        router = make_router(hub, "solo")
        await router.start()
        try:
            assert await router.call("solo", "echo", [1, "x"]) == {"echo": [1, "x"]}
            with pytest.raises(Problem) as err:
                await router.call("solo", "missing", "r1")
            assert (err.value.status_code, err.value.detail) == (404, "no run 'r1'")
            with pytest.raises(Problem) as err:
                await router.call("elsewhere", "echo", 1)
            assert err.value.status_code == 503
            assert list(router.peers()) == ["solo"]
        finally:
            await router.close()


@pytest.fixture
async def two(redis_server: RedisServer) -> AsyncIterator[tuple[Router, Router]]:
    """Two instances, each with its own hub and Redis connections, as two processes would have."""
    async with AsyncExitStack() as stack:
        routers = []
        for name in ("a", "b"):
            hub = await stack.enter_async_context(Hub(from_url(redis_server.url)))
            router = make_router(hub, name)
            await router.start()
            stack.push_async_callback(router.close)
            routers.append(router)
        yield routers[0], routers[1]


async def until_peers(router: Router, names: set[str]) -> None:
    for _ in range(100):
        if set(router.peers()) == names:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{router.instance} sees {set(router.peers())}, expected {names}")


@pytest.mark.redis
async def test_instances_find_each_other_and_call_across_redis(two: tuple[Router, Router]) -> None:
    a, b = two
    await until_peers(a, {"a", "b"})
    await until_peers(b, {"a", "b"})
    assert a.peers()["b"].meta == {"host": "host-b"}
    results = await asyncio.gather(*(a.call("b", "echo", i) for i in range(50)))
    assert results == [{"echo": i} for i in range(50)]  # each caller got its own answer
    assert await b.call("a", "echo", "back") == {"echo": "back"}
    everyone = await a.call_all("echo", "all")
    assert everyone == {"a": {"echo": "all"}, "b": {"echo": "all"}}
    assert a.stats()["waiting"] == 0


@pytest.mark.redis
async def test_a_remote_http_error_keeps_its_status_and_detail(two: tuple[Router, Router]) -> None:
    a, _ = two
    await until_peers(a, {"a", "b"})
    with pytest.raises(Problem) as err:
        await a.call("b", "missing", "r9")
    assert (err.value.status_code, err.value.detail) == (404, "no run 'r9'")
    with pytest.raises(Problem) as err:
        await a.call("b", "no-such-method")
    assert err.value.status_code == 501


@pytest.mark.redis
async def test_an_owner_that_does_not_answer_is_a_504_and_a_stopped_one_a_503(two: tuple[Router, Router]) -> None:
    a, b = two
    await until_peers(a, {"a", "b"})
    with pytest.raises(Problem) as err:
        await a.call("b", "stuck", timeout=0.3)
    assert err.value.status_code == 504
    assert a.stats()["waiting"] == 0
    await b.close()  # says goodbye: a forgets it at once
    await until_peers(a, {"a"})
    with pytest.raises(Problem) as err:
        await a.call("b", "echo", 1)
    assert err.value.status_code == 503


@pytest.mark.redis
async def test_peer_changes_are_told_when_an_instance_comes_leaves_or_goes_silent(redis_server: RedisServer) -> None:
    """``on_change``: the hook apps use to tell their clients at once (exec: a run's owner is gone)."""
    async with AsyncExitStack() as stack:
        hubs = [await stack.enter_async_context(Hub(from_url(redis_server.url))) for _ in range(3)]
        a = make_router(hubs[0], "a")
        seen: list[tuple[str, bool]] = []
        a.on_change.append(lambda name, alive: seen.append((name, alive)))
        await a.start()
        stack.push_async_callback(a.close)
        b, c = make_router(hubs[1], "b"), make_router(hubs[2], "c")
        await b.start()
        await c.start()
        stack.push_async_callback(c.close)
        await until_peers(a, {"a", "b", "c"})
        assert sorted(seen) == [("b", True), ("c", True)]
        await b.close()  # a goodbye
        await until_peers(a, {"a", "c"})
        assert seen[-1] == ("b", False)
        # c goes silent without a goodbye (as after kill -9): told after three missed beats.
        for task in c._tasks:
            task.cancel()
        for _ in range(40):
            if seen[-1] == ("c", False):
                break
            await asyncio.sleep(0.05)
        assert seen[-1] == ("c", False), seen
        assert seen.count(("b", True)) == 1  # its beats did not tell it again
