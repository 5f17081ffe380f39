"""Resume while someone else keeps the topic live, on the product people run (issue 13, part 2).

Another reader keeps a topic's log in the server's memory, so a client that comes back with
Last-Event-ID is served from that log. It must get the stored events it missed, and none of the
ephemeral ones published while it was away: no `typing` from seconds ago, not its own `leave`
after a presence snapshot that lists it, no stale `metrics` frames.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .rig import DASHBOARD_TOKEN, Product, RawStream, open_stream, wait_body

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Product]:
    p = Product(Path(tmp_path_factory.mktemp("resume")) / "data").start()
    try:
        yield p
    finally:
        p.stop()


async def _opened(product: Product, path: str, headers: dict[str, str]) -> RawStream:
    stream = await open_stream(product.port, path, headers)
    await asyncio.wait_for(stream.opened.wait(), 10)
    assert stream.status == 200, stream.head
    return stream


async def test_chat_resume_skips_typing_and_presence_from_while_away(product: Product) -> None:
    async with (
        httpx.AsyncClient(base_url=product.url, timeout=10) as alice,
        httpx.AsyncClient(base_url=product.url, timeout=10) as bob,
    ):
        assert (await alice.post("/chat/session", json={"name": "alice"})).status_code == 200
        assert (await bob.post("/chat/session", json={"name": "bob"})).status_code == 200
        a_cookie = {"Cookie": f"chat_session={alice.cookies['chat_session']}"}
        b_cookie = {"Cookie": f"chat_session={bob.cookies['chat_session']}"}
        room = "/chat/rooms/general"
        keeper = await _opened(product, room + "/events", a_cookie)  # alice's tab keeps the topic live
        away = await _opened(product, room + "/events", b_cookie)
        first = await alice.post(room + "/messages", json={"text": "before", "client_msg_id": "r1"})
        assert first.status_code == 201, first.text
        await wait_body(away, b"before")
        last_id = [i for e, i, d in away.events() if e == "message" and "before" in d and i][-1]
        await away.close()  # bob closes his tab
        assert (await alice.post(room + "/typing")).status_code == 204
        # Past the 5 s presence grace: bob's `leave` is published while he is away.
        await wait_body(keeper, b"event: leave", timeout=10)
        sent = await alice.post(room + "/messages", json={"text": "while away", "client_msg_id": "r2"})
        assert sent.status_code == 201
        back = await _opened(product, room + "/events", b_cookie | {"Last-Event-ID": last_id})
        await wait_body(back, b"while away")
        await asyncio.sleep(0.3)  # anything else wrongly replayed would be here by now
        await back.close()
        await keeper.close()
    events = [(e, d) for e, _, d in back.events()]
    kinds = [e for e, _ in events]
    assert "typing" not in kinds, events
    assert "leave" not in kinds, events  # his own leave, after a snapshot that lists him
    assert kinds[0] == "presence"
    assert "bob" in events[0][1]
    assert [json.loads(d)["text"] for e, d in events if e == "message"] == ["while away"]


async def test_dashboard_resume_gets_no_stale_metrics_frames(product: Product) -> None:
    auth = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
    async with httpx.AsyncClient(base_url=product.url, timeout=10, headers=auth) as http:
        keeper = await _opened(product, "/dashboard/events", {})  # another viewer keeps it live
        away = await _opened(product, "/dashboard/events", {})
        r = await http.post("/dashboard/commands", json={"action": "set_interval", "seconds": 0.25})
        assert r.status_code == 200, r.text
        await wait_body(away, b"event: settings")
        last_id = [i for e, i, _ in away.events() if e == "settings" and i][-1]
        await away.close()
        await asyncio.sleep(2.5)  # ~10 frames published while away
        back_at = time.time()
        back = await _opened(product, "/dashboard/events", {"Last-Event-ID": last_id})
        await asyncio.sleep(1.0)
        await back.close()
        await keeper.close()
        await http.post("/dashboard/commands", json={"action": "set_interval", "seconds": 1})
    frames = [json.loads(d)["t"] for e, _, d in back.events() if e == "metrics"]
    assert frames, back.text()[-500:]
    # Every frame is from after the reconnect (a frame's time is when it was sampled).
    stale = [round(back_at - t, 2) for t in frames if t < back_at - 0.3]
    assert not stale, f"{len(stale)} stale metrics frames, seconds old: {stale}"
