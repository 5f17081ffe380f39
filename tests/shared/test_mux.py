"""The multiplexed stream (issue 15, docs/mux.md): one ``GET /sse/mux`` carrying the topics of
every app of the combined server, each run as the app's own endpoint, on a real uvicorn."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import showcase.app as showcase
from dashboard.settings import DashboardSettings
from remote_exec.settings import ExecSettings
from shared.apps import shutdown_groups
from shared.decoder import Decoder
from tests.mux_rig import MuxClient
from tests.rig import LiveServer

EXEC_TOKEN = "mux-test-exec-token-0123456789abcdef"
DASH_TOKEN = "mux-test-dashboard-token-012345678"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("mux")
    settings = showcase.Settings(
        data_dir=data, exec=ExecSettings(token=EXEC_TOKEN), dashboard=DashboardSettings(control_token=DASH_TOKEN)
    )
    with LiveServer(lambda: showcase.create_app(settings)) as srv:
        yield srv


@pytest.fixture(autouse=True)
async def no_subscriber_left(server: LiveServer) -> Any:
    """Each test starts on a server with no open subscription (the previous test's last ones
    are released within moments of its client going), and leaves none behind."""
    await wait_subscribers(server, 0)
    yield
    await wait_subscribers(server, 0)


def subscribers(srv: LiveServer) -> int:
    """Open hub subscriptions over every app of the server (what a leak would leave behind)."""
    assert srv.server is not None
    hubs = [h for group in shutdown_groups(srv.server.served_app()) for h in group if hasattr(h, "stats")]
    return sum(h.stats().get("subscribers", 0) for h in hubs if "subscribers" in h.stats())


def mux_of(srv: LiveServer) -> Any:
    node = srv.server.served_app() if srv.server is not None else None
    while node is not None and type(node).__name__ != "Mux":
        node = getattr(node, "app", None)
    assert node is not None, "the server is not behind the mux"
    return node


async def join_chat(client: httpx.AsyncClient, name: str) -> None:
    r = await client.post("/chat/session", json={"name": name})
    assert r.status_code == 200, r.text


async def say(client: httpx.AsyncClient, room: str, text: str) -> dict[str, Any]:
    r = await client.post(f"/chat/rooms/{room}/messages", json={"text": text, "client_msg_id": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def new_room(client: httpx.AsyncClient) -> str:
    name = f"r{uuid.uuid4().hex[:8]}"
    r = await client.post("/chat/rooms", json={"name": name})
    assert r.status_code == 201, r.text
    return name


async def wait_subscribers(srv: LiveServer, n: int, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while subscribers(srv) != n:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{subscribers(srv)} hub subscribers, expected {n}")
        await asyncio.sleep(0.05)


async def test_one_stream_carries_chat_dashboard_basics_and_exec(server: LiveServer) -> None:
    async with MuxClient(server.url) as mux:
        await join_chat(mux.client, "ada")
        r = await mux.client.post("/exec/login", json={"token": EXEC_TOKEN})
        assert r.status_code == 200, r.text
        room = await new_room(mux.client)
        r = await mux.post(
            {
                "subscribe": [
                    {"k": "lobby", "path": "/chat/events"},
                    {"k": "room", "path": f"/chat/rooms/{room}/events"},
                    {"k": "dash", "path": "/dashboard/events"},
                    {"k": "ticks", "path": "/basics/events?count=3&interval=0.05"},
                    {"k": "runs", "path": "/exec/events"},
                ]
            }
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"subscribed": ["lobby", "room", "dash", "ticks", "runs"], "unsubscribed": []}
        for k in ("lobby", "room", "dash", "ticks", "runs"):
            await mux.state(k, "open")
        # Each app's own first events, relayed with their types and ids.
        presence = (await mux.count("room", 1))[0]
        assert presence["e"] == "presence"
        assert "ada" in presence["d"]
        assert {f["e"] for f in await mux.count("dash", 1)} & {"hosts", "snapshot", "history"}
        ticks = await mux.count("ticks", 4)
        assert [(f["e"], f["id"]) for f in ticks] == [("tick", "1"), ("tick", "2"), ("tick", "3"), ("done", "3")]
        await mux.state("ticks", "closed")  # a finished stream ends its topic, not the mux
        # Live events of two apps on the one stream.
        sent = await say(mux.client, room, "hello over the mux")
        run = await mux.client.post(
            "/exec/runs", json={"argv": ["echo", "hi"]}, headers={"authorization": f"Bearer {EXEC_TOKEN}"}
        )
        assert run.status_code == 201, run.text
        await mux.until(lambda: any("hello over the mux" in f["d"] for f in mux.frames("room")))
        message = next(f for f in mux.frames("room") if "hello over the mux" in f["d"])
        assert message["id"] is not None
        assert str(sent["id"]) in message["d"]
        await mux.until(lambda: any(run.json()["id"] in f["d"] for f in mux.frames("runs")), what="the run event")
        # The mux sets no id of its own: resume positions are per topic, in the frames.
        assert all(e.id is None for e in mux.events)


async def plain_events(
    client: httpx.AsyncClient, path: str, last_id: str | None, *, until: Any, during: Any = None
) -> list[tuple[str, str | None, str]]:
    """A plain stream of ``path`` (from ``last_id``), presence snapshots left out, read until
    ``until(events)``; ``during()`` runs once the stream is open."""
    out: list[tuple[str, str | None, str]] = []
    headers = {"last-event-id": last_id} if last_id else {}
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        decoder = Decoder(last_id)
        async for chunk in response.aiter_raw():
            events = decoder.feed(chunk)
            out += [(e.event, e.id, e.data) for e in events if e.event != "presence"]
            if during is not None and any(e.event == "presence" for e in events):
                await during()
                during = None
            if until(out):
                return out
    raise AssertionError(f"the plain stream ended: {out}")


async def test_topics_resume_from_their_own_last_id_like_a_plain_stream(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await join_chat(client, "bea")
        room = await new_room(client)
        path = f"/chat/rooms/{room}/events"

        async def six() -> None:
            for i in range(6):
                await say(client, room, f"message {i}")

        # Six messages seen live, to learn their event ids.
        live = await plain_events(
            client, path, None, until=lambda es: sum(e == "message" for e, _, _ in es) >= 6, during=six
        )
        ids = [i for e, i, _ in live if e == "message"]
        resume_after, last = ids[1], ids[-1]
        # A plain stream of the same path from the second one's id: what a reconnect replays.
        plain = await plain_events(client, path, resume_after, until=lambda es: any(i == last for _, i, _ in es))

        async with MuxClient(server.url, cookies=client.cookies) as mux:
            await mux.subscribe("a", path, last_event_id=resume_after)
            await mux.until(lambda: any(f["id"] == last for f in mux.frames("a")), what="the replay")
            relayed = [(f["e"], f["id"], f["d"]) for f in mux.frames("a") if f["e"] != "presence"]
            assert relayed == plain
            assert [i for e, i, _ in relayed if e == "message"] == ids[2:]
            # Then a live one: nothing twice, nothing missing.
            after = await say(client, room, "after the resume")
            await mux.until(lambda: any("after the resume" in f["d"] for f in mux.frames("a")))
            messages = [f for f in mux.frames("a") if f["e"] == "message"]
            assert len(messages) == 5
            assert len({f["id"] for f in messages}) == 5
            assert str(after["id"]) in messages[-1]["d"]


async def test_a_refused_topic_gets_its_own_error_and_the_others_carry_on(server: LiveServer) -> None:
    async with MuxClient(server.url) as mux:  # no chat session, no exec login
        r = await mux.post(
            {
                "subscribe": [
                    {"k": "ticks", "path": "/basics/events"},
                    {"k": "room", "path": "/chat/rooms/general/events"},
                    {"k": "runs", "path": "/exec/events"},
                    {"k": "page", "path": "/chat/"},
                    {"k": "loop", "path": "/sse/mux"},
                    {"k": "dots", "path": "/basics/../sse/mux"},
                    {"k": "gone", "path": "/nothing/here/events"},
                ]
            }
        )
        assert r.status_code == 200, r.text
        room = await mux.state("room", "error")
        assert room["status"] == 401
        assert "session" in room["body"]["detail"]
        runs = await mux.state("runs", "error")
        assert runs["status"] == 401, runs
        page = await mux.state("page", "error")
        assert page["status"] == 400
        assert "not an event stream" in page["body"]["detail"]
        loop = await mux.state("loop", "error")
        assert loop["status"] == 400
        assert "/sse/" in loop["body"]["detail"]
        dots = await mux.state("dots", "error")
        assert dots["status"] == 400
        assert "'..'" in dots["body"]["detail"]
        gone = await mux.state("gone", "error")
        assert gone["status"] == 404
        # The refused ones are dropped (they do not count against the cap); the good one flows.
        await mux.state("ticks", "open")
        await mux.count("ticks", 1, timeout=15)
        assert set(mux_of(server).conns[mux.conn].topics) == {"ticks"}


async def test_subscribe_replace_and_unsubscribe_while_the_stream_stays_open(server: LiveServer) -> None:
    base = subscribers(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await join_chat(client, "cy")
        first, second = await new_room(client), await new_room(client)
        async with MuxClient(server.url, cookies=client.cookies) as mux:
            await mux.subscribe("r", f"/chat/rooms/{first}/events")
            await mux.state("r", "open")
            await say(client, first, "in the first room")
            await mux.until(lambda: any("in the first room" in f["d"] for f in mux.frames("r")))
            await wait_subscribers(server, base + 1)
            # The same key again: the old stream ends first, then the new one runs.
            await mux.subscribe("r", f"/chat/rooms/{second}/events")
            await mux.until(lambda: len([s for s in mux.states("r") if s["state"] == "open"]) == 2)
            await wait_subscribers(server, base + 1)
            mark = len(mux.frames("r"))
            await say(client, first, "not for this topic any more")
            await say(client, second, "in the second room")
            await mux.until(lambda: any("in the second room" in f["d"] for f in mux.frames("r")))
            assert not any("not for this topic" in f["d"] for f in mux.frames("r")[mark:])
            # Unsubscribed: released at once, nothing more arrives, no `closed` (the client asked).
            r = await mux.unsubscribe("r")
            assert r.json() == {"subscribed": [], "unsubscribed": ["r"]}
            await wait_subscribers(server, base)
            mark = len(mux.frames("r"))
            await say(client, second, "after the unsubscribe")
            await asyncio.sleep(0.3)
            assert len(mux.frames("r")) == mark
            assert [s["state"] for s in mux.states("r")] == ["open", "open"]
            # Still open: a new topic on the same stream.
            await mux.subscribe("t", "/basics/events?count=1&interval=0")
            await mux.state("t", "closed")


async def test_post_errors_name_the_problem(server: LiveServer) -> None:
    async with MuxClient(server.url) as mux:
        ok = {"subscribe": [{"k": "a", "path": "/basics/events?count=1"}]}
        r = await mux.post(ok, conn="000000000000.nonexistentconnection00")
        assert r.status_code == 404
        assert r.json()["detail"] == "unknown mux connection"
        r = await mux.post(ok, conn="not-a-connection-id")
        assert r.status_code == 404
        r = await mux.post(ok, token="wrong-token")
        assert r.status_code == 401
        assert "token" in r.json()["detail"]
        r = await mux.client.post(f"/sse/mux/{mux.conn}", json=ok)  # no Authorization at all
        assert r.status_code == 401
        assert "Bearer" in r.json()["detail"]
        r = await mux.post(ok, headers={"origin": "http://evil.example"})
        assert r.status_code == 403
        assert "evil.example" in r.json()["detail"]
        r = await mux.post(None, content=b"subscribe", headers={"content-type": "text/plain"})
        assert r.status_code == 415
        for body, field in [
            ([1, 2], "body"),
            ({"subscribe": {"k": "a"}}, "subscribe"),
            ({"subscribe": [{"k": "bad key!", "path": "/basics/events"}]}, "subscribe[0].k"),
            ({"subscribe": [{"k": "x" * 65, "path": "/basics/events"}]}, "subscribe[0].k"),
            ({"subscribe": [{"k": "a", "path": 5}]}, "subscribe[0].path"),
            (
                {"subscribe": [{"k": "a", "path": "/basics/events", "last_event_id": "1\r\nx: y"}]},
                "subscribe[0].last_event_id",
            ),
            ({"subscribe": [{"k": "a", "path": "/a"}, {"k": "a", "path": "/b"}]}, "subscribe[1].k"),
            ({"unsubscribe": "a"}, "unsubscribe"),
            ({"subscribe": [], "color": "red"}, "color"),
        ]:
            r = await mux.post(body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["detail"].startswith(field), (body, r.json())
        r = await mux.post(None, content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert r.json()["detail"].startswith("body")
        many = {"subscribe": [{"k": f"k{i}", "path": "/basics/events?count=1"} for i in range(65)]}
        r = await mux.post(many)
        assert r.status_code == 429, r.text
        assert r.json()["extra"] == {"limit": 64, "limit_name": "max_topics"}
        assert r.headers["retry-after"]
        await asyncio.sleep(0.2)
        assert mux.states("k0") == []  # refused as a whole: nothing was subscribed
        # GET on the POST path, POST on the GET path.
        assert (await mux.client.get(f"/sse/mux/{mux.conn}")).status_code == 405
        assert (await mux.client.post("/sse/mux", json={})).status_code == 405


async def test_nothing_leaks_when_the_client_goes(server: LiveServer) -> None:
    base = subscribers(server)
    mux_app = mux_of(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await join_chat(client, "dee")
        room = await new_room(client)
        mux = MuxClient(server.url, cookies=client.cookies)
        await mux.__aenter__()
        await mux.post(
            {
                "subscribe": [
                    {"k": "lobby", "path": "/chat/events"},
                    {"k": "room", "path": f"/chat/rooms/{room}/events"},
                    {"k": "dash", "path": "/dashboard/events"},
                    {"k": "ticks", "path": "/basics/events"},
                ]
            }
        )
        for k in ("lobby", "room", "dash", "ticks"):
            await mux.state(k, "open")
        await wait_subscribers(server, base + 4)
        assert mux_app.mux_stats() == {"streams": 1, "topics": 4}
        await mux.close()  # the tab is closed: the connection drops
        await wait_subscribers(server, base)
        deadline = asyncio.get_running_loop().time() + 5
        while mux_app.conns:
            assert asyncio.get_running_loop().time() < deadline, "the mux connection was not released"
            await asyncio.sleep(0.05)
        # And the chat saw the reader leave the room (presence is the app's own, per topic).
        r = await client.get(f"/chat/rooms/{room}/messages")
        assert r.status_code == 200


async def test_worker_script_path_is_the_muxs(server: LiveServer, tmp_path: Path) -> None:
    mux_app = mux_of(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        saved = mux_app.worker_script
        try:
            mux_app.worker_script = tmp_path / "missing.js"
            r = await client.get("/sse/worker.js")
            assert r.status_code == 404
            assert r.headers["content-type"] == "application/json"
            script = tmp_path / "sse-worker.js"
            script.write_text("onconnect = () => {};\n")
            mux_app.worker_script = script
            r = await client.get("/sse/worker.js")
            assert r.status_code == 200
            assert r.text == "onconnect = () => {};\n"
            assert r.headers["content-type"].startswith("text/javascript")
        finally:
            mux_app.worker_script = saved
        # Other /sse/ paths are the app's.
        assert (await client.get("/sse/other")).status_code == 404


async def test_concurrent_changes_of_one_key_leave_one_topic_running(server: LiveServer) -> None:
    base = subscribers(server)
    async with MuxClient(server.url) as mux:
        answers = await asyncio.gather(
            *(mux.post({"subscribe": [{"k": "same", "path": "/basics/events"}]}) for _ in range(10))
        )
        assert [r.status_code for r in answers] == [200] * 10
        await mux.until(lambda: len([s for s in mux.states("same") if s["state"] == "open"]) >= 1)
        await asyncio.sleep(0.3)
        await wait_subscribers(server, base + 1)
        await mux.unsubscribe("same")
        await wait_subscribers(server, base)
