"""Issue 19: a rolling restart behind a real nginx loses nothing.

Two ``python -m showcase`` instances on one redis-server, behind Debian's nginx running the
shipped ``deploy/nginx/sse.conf`` (only its instance addresses and ``listen`` filled in). Through
nginx: chat readers and senders, a ``/bidi/`` responder with a trigger loop, dashboard viewers.
Each instance in turn gets SIGTERM (``--drain-seconds 2``), exits, and is started again while
messages flow. What a user would notice is asserted: every acknowledged message reaches every
reader once and in order, every reader is back within 2 s of its stream ending, and no client
sees a 5xx but the 503s it retried.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from shared.client import Backoff, EventStream, Responder, Status

from .nginx_rig import HOST, Nginx, edge
from .rig import Product

pytestmark = [pytest.mark.slow, pytest.mark.redis]

DRAIN_S = 2
READERS, SENDERS, VIEWERS, LATE_VIEWERS = 8, 4, 3, 4
SEND_EVERY_S = 0.25  # per sender: 16 messages a second in all, under the per-person cap of 10/s
# The issue asks 2 s. With the hub's shutdown retry hints spread over 0.1-1 s per stream, the
# worst gap here was 1.12-1.21 s in three runs (median 0.51-0.68 s); with a fixed 1 s hint it was
# 1.0-1.6 s and one run in ~26 gave 2.03 s (27 streams reconnecting in the same 250 ms).
RESUME_BOUND_S = 2.0


@dataclass
class Listener:
    """One EventStream through nginx and what a user would notice of it."""

    name: str
    ends: list[float] = field(default_factory=list)  # when a stream ended (shutdown, drop)
    opens: list[float] = field(default_factory=list)  # when a 200 stream head arrived
    problems: list[str] = field(default_factory=list)  # retry reasons that were not a stream end
    messages: list[str] = field(default_factory=list)  # chat: message texts, in arrival order
    events: int = 0

    def status(self, st: Status) -> None:
        now = time.monotonic()
        if st.state == "open":
            self.opens.append(now)
        elif st.state == "retrying":
            if st.detail in ("the server is shutting down", "the server ended the stream"):
                self.ends.append(now)
            else:
                self.problems.append(st.detail)

    def gaps(self) -> list[float]:
        """For each stream end: how long until the next stream was open (inf if never)."""
        return [min((o - e for o in self.opens if o > e), default=float("inf")) for e in self.ends]


def cookie_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return f"chat_session={response.cookies['chat_session']}"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Nginx, list[Product]]]:
    with edge(tmp_path, DRAIN_S) as running:
        yield running


async def test_rolling_restart_behind_nginx_loses_nothing(rig: tuple[Nginx, list[Product]]) -> None:
    nginx, products = rig
    headers = {"Host": f"{HOST}:{nginx.port}"}
    http = httpx.AsyncClient(base_url=nginx.url, headers=headers, timeout=10)
    stop = asyncio.Event()
    t0 = time.monotonic()
    timeline: list[str] = []
    statuses: Counter[str] = Counter()  # every answer a POSTing client saw, "send 201", "trigger 503"...

    # The Host allowlist holds through nginx: another name is refused by the instance.
    evil = await http.get("/healthz", headers={"Host": "evil.example"})
    assert evil.status_code == 400
    assert "--allowed-hosts evil.example" in evil.json()["detail"]

    async def join(name: str) -> str:
        # A client of its own: a join revokes the session cookie it is sent with.
        async with httpx.AsyncClient(base_url=nginx.url, headers=headers, timeout=10) as fresh:
            return cookie_of(await fresh.post("/chat/session", json={"name": name}))

    room = "/chat/rooms/general"
    readers = [Listener(f"reader{i}") for i in range(READERS)]
    viewers = [Listener(f"viewer{i}") for i in range(VIEWERS)]

    async def read(listener: Listener, path: str, cookie: str | None) -> None:
        extra = {"Cookie": cookie} if cookie else {}
        async with EventStream(
            nginx.url + path, headers=headers | extra, backoff=Backoff(), on_status=listener.status
        ) as events:
            async for ev in events:
                listener.events += 1
                if ev.event == "message":
                    listener.messages.append(json.loads(ev.data)["text"])
                elif ev.is_reset:
                    listener.problems.append(f"reset: {ev.data}")

    tasks = [asyncio.create_task(read(r, room + "/events", await join(r.name))) for r in readers]
    tasks += [asyncio.create_task(read(v, "/dashboard/events", None)) for v in viewers]
    deadline = time.monotonic() + 15
    while not all(x.opens and x.events for x in readers + viewers):
        assert time.monotonic() < deadline, "the listeners did not all open through nginx"
        await asyncio.sleep(0.05)

    acked: dict[int, list[str]] = {i: [] for i in range(SENDERS)}
    # POSTs carry the Origin a page at http://chat.example.com:PORT sends: the instance's Origin
    # check compares it with the Host nginx passes on, port included.
    page = {"Origin": f"http://{HOST}:{nginx.port}"}

    async def post_until_answered(kind: str, path: str, body: dict[str, object], cookie: str = "") -> httpx.Response:
        """POST, and on 503 / 502 / a dropped connection POST the same body again (as our
        pages do: the client_msg_id makes a resent chat message safe)."""
        for _ in range(100):
            try:
                r = await http.post(path, json=body, headers=page | ({"Cookie": cookie} if cookie else {}))
            except httpx.TransportError as exc:
                statuses[f"{kind} {type(exc).__name__}"] += 1
                await asyncio.sleep(0.1)
                continue
            statuses[f"{kind} {r.status_code}"] += 1
            if r.status_code not in (200, 201):
                took = r.elapsed.total_seconds()
                timeline.append(f"{time.monotonic() - t0:.2f} {kind} {r.status_code} in {took:.2f}s {r.text[:150]}")
            if r.status_code not in (502, 503, 504):
                return r
            await asyncio.sleep(float(r.headers.get("retry-after", "0.2")))
        raise AssertionError(f"{kind}: no answer after 100 tries")

    async def send(i: int) -> None:
        cookie = await join(f"sender{i}")
        seq = 0
        while not stop.is_set():
            text = f"s{i}-{seq}"
            r = await post_until_answered("send", room + "/messages", {"text": text, "client_msg_id": text}, cookie)
            assert r.status_code == 201, r.text
            acked[i].append(text)
            seq += 1
            await asyncio.sleep(SEND_EVERY_S)

    # The /bidi/ responder: its session lives on one instance; after that one restarts it gets a
    # new session elsewhere. A trigger loop asks it through nginx and retries what was refused.
    responder = Responder(
        nginx.url + "/bidi/events",
        client_id="rolling-1",
        headers=headers,
        on_status=lambda st: timeline.append(f"{time.monotonic() - t0:.2f} responder {st.state} {st.detail[:80]}"),
    )
    responder.register("echo", lambda params: params)
    triggers_answered = 0

    async def trigger() -> None:
        nonlocal triggers_answered
        n = 0
        while not stop.is_set():
            body = {"client_id": "rolling-1", "method": "echo", "params": {"n": n}, "timeout_s": 5}
            for _ in range(50):
                r = await post_until_answered("trigger", "/bidi/trigger", body)
                if r.status_code == 200:
                    assert r.json()["result"] == {"n": n}
                    triggers_answered += 1
                    break
                # Between its sessions the responder is briefly unknown: ask again.
                assert r.status_code in (404, 410), r.text
                await asyncio.sleep(0.2)
            n += 1
            await asyncio.sleep(0.3)

    async with responder:
        senders = [asyncio.create_task(send(i)) for i in range(SENDERS)]
        trigger_task = asyncio.create_task(trigger())
        await asyncio.sleep(2)
        restarts: list[dict[str, float]] = []
        late: list[Listener] = []
        for n, product in enumerate(products):
            sent = product.signal(signal.SIGTERM)
            timeline.append(f"{sent - t0:.2f} SIGTERM {product.port}")
            # New streams while it drains: it refuses them (503), nginx hands them to the other.
            await asyncio.sleep(0.3)
            for j in range(LATE_VIEWERS):
                late.append(Listener(f"late{n}.{j}"))
                tasks.append(asyncio.create_task(read(late[-1], "/dashboard/events", None)))
            rc = await asyncio.to_thread(product.wait, DRAIN_S + 15)
            exited = time.monotonic()
            assert rc in (0, -signal.SIGTERM), product.output()[-2000:]
            assert "Traceback" not in product.output(), product.output()[-3000:]
            await asyncio.to_thread(product.start, "/readyz")
            timeline.append(f"{time.monotonic() - t0:.2f} ready again {product.port}")
            restarts.append({"exit_s": exited - sent, "ready_again_s": time.monotonic() - sent})
            await asyncio.sleep(2)  # longer than the shipped fail_timeout (1 s)
        stop.set()
        await asyncio.gather(*senders, trigger_task)

    # Every reader catches up with every acknowledged message.
    expected = sum(len(v) for v in acked.values())
    for _ in range(100):  # up to 10 s
        if all(len(r.messages) >= expected for r in readers):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # anything duplicated would be here by now
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await http.aclose()

    gaps = [g for x in readers + viewers + late for g in x.gaps()]
    upstream = Counter(line.split(" [", 1)[1].split("]", 1)[0] for line in nginx.access())
    figures = {
        "acked messages": expected,
        "triggers answered": triggers_answered,
        "restarts": restarts,
        "stream ends": len(gaps),
        "slowest resume": max(((max(x.gaps()), x.name) for x in readers + viewers + late if x.ends), default=None),
        "resume gap s (min/median/max)": (min(gaps), statistics.median(gaps), max(gaps)) if gaps else None,
        "client statuses": dict(statuses),
        "nginx upstream statuses": dict(upstream.most_common(8)),
        "timeline": timeline,
    }
    print("rolling restart figures:", json.dumps(figures, default=str))

    for r in readers:
        assert len(r.messages) == len(set(r.messages)), f"{r.name} got a message twice"
        assert set(r.messages) == {t for v in acked.values() for t in v}, f"{r.name} missed messages"
        for i in range(SENDERS):
            mine = [t for t in r.messages if t.startswith(f"s{i}-")]
            assert mine == acked[i], f"{r.name}: sender {i}'s messages out of order"
        assert r.messages == readers[0].messages, "readers saw the room in different orders"
    for x in readers + viewers + late:
        assert not x.problems, (x.name, x.problems)  # no 5xx, no reset, no dropped connection
        assert x.opens, f"{x.name} never opened"
    for x in readers + viewers:
        assert x.ends, f"{x.name}: its stream never ended; was an instance restarted?"
    assert upstream["503, 200"] >= 1, f"no stream was refused by a draining instance: {figures}"
    assert max(gaps) < RESUME_BOUND_S, figures
    # 503s were retried (counted here, never seen by a reader); a trigger may also get 404 for
    # the second between the responder's session ending with its instance and its new one.
    bad = {k: n for k, n in statuses.items() if not k.endswith((" 200", " 201", " 503", "trigger 404"))}
    assert not bad, figures
    assert triggers_answered >= 10, figures
    assert "[alert]" not in nginx.errors()
    assert "[emerg]" not in nginx.errors()
