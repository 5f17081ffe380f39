"""Caps on the shared connection (issue 15, docs/mux.md "Caps"): a mux topic is the app's own
request, so the app's caps apply to it, except the hubs' per-client *connection* cap, which counts
sockets. The mux connection counts once under its own cap, its topics under theirs.

Loopback is counted here (``limit_loopback``), as it would be for any other address."""

from __future__ import annotations

from pathlib import Path

import httpx

import chat
from shared.hub import HubSettings
from shared.mux import Mux
from tests.mux_rig import MuxClient
from tests.rig import LiveServer


def _server(tmp: Path) -> LiveServer:
    def build() -> Mux:
        app = chat.create_app(tmp, hub_settings=HubSettings(max_streams_per_client=2, limit_loopback=True))
        return Mux(app, limit_loopback=True, max_streams_per_client=2, max_topics=3, max_topics_per_client=4)

    return LiveServer(build)


async def test_topics_are_capped_per_connection_and_client_not_by_the_socket_cap(tmp_path: Path) -> None:
    with _server(tmp_path) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
            assert (await http.post("/chat/session", json={"name": "fay"})).status_code == 200
            rooms = ["general", "random"]
            for name in ("one", "two"):
                assert (await http.post("/chat/rooms", json={"name": name})).status_code == 201
            rooms += ["one", "two"]
            # Plain streams: the app's cap of 2 per client address, as before.
            async with (
                http.stream("GET", "/chat/events") as a,
                http.stream("GET", "/chat/rooms/general/events") as b,
            ):
                assert (a.status_code, b.status_code) == (200, 200)
                third = await http.get("/chat/rooms/random/events")
                assert third.status_code == 429
                assert third.json()["extra"]["limit_name"] == "max_streams_per_client"

                # While those two are open, one mux connection carries three topics: they are
                # not sockets, so the socket cap does not see them.
                async with MuxClient(srv.url, cookies=http.cookies) as mux:
                    r = await mux.post(
                        {
                            "subscribe": [
                                {"k": f"r{i}", "path": f"/chat/rooms/{room}/events"} for i, room in enumerate(rooms[:3])
                            ]
                        }
                    )
                    assert r.status_code == 200, r.text
                    for i in range(3):
                        await mux.state(f"r{i}", "open")
                    # A fourth on this connection: its own cap.
                    r = await mux.post({"subscribe": [{"k": "r3", "path": "/chat/events"}]})
                    assert r.status_code == 429
                    assert r.json()["extra"] == {"limit": 3, "limit_name": "max_topics"}
                    # A second connection of the same client may hold one more: the client's cap.
                    async with MuxClient(srv.url, cookies=http.cookies) as other:
                        await other.subscribe("x", "/chat/events")
                        await other.state("x", "open")
                        r = await other.post({"subscribe": [{"k": "y", "path": f"/chat/rooms/{rooms[3]}/events"}]})
                        assert r.status_code == 429
                        assert r.json()["extra"] == {"limit": 4, "limit_name": "max_topics_per_client"}
                        # Replacing a topic is not one more.
                        await other.subscribe("x", "/chat/rooms/two/events")
                        # And a third mux connection is one connection too many.
                        refused = await http.get("/sse/mux")
                        assert refused.status_code == 429
                        assert refused.json()["extra"]["limit_name"] == "max_streams_per_client"
                        assert refused.headers["retry-after"]
                    # The other connection gone, its topics no longer count against the client.
                    r = await mux.post({"unsubscribe": ["r0"], "subscribe": [{"k": "r3", "path": "/chat/events"}]})
                    assert r.status_code == 200, r.text
