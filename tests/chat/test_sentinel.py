"""Redis Sentinel (issue 19): the master killed mid-chat, the replica promoted, and the chat carries on.

A master, a replica and three ``redis-sentinel``s (tests/sentinel_rig.py); two chat instances on
``redis+sentinel://``, a reader stream open on each.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from chat import ChatSettings
from tests.chat.scaleout_helpers import MESSAGES, Follower, instances, messages_of
from tests.sentinel_rig import SentinelSet

from .conftest import Person


class Readiness(threading.Thread):
    """Polls ``/readyz`` of each instance every 0.1 s, recording (when, base, status)."""

    def __init__(self, bases: list[str]) -> None:
        super().__init__(daemon=True)
        self.bases = bases
        self.seen: list[tuple[float, str, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=3) as c:
            while not self.stop.is_set():
                for base in self.bases:
                    try:
                        status = c.get(f"{base}/readyz").status_code
                    except httpx.HTTPError:
                        status = 0
                    self.seen.append((time.monotonic(), base, status))
                time.sleep(0.1)


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_failover_loses_nothing_acknowledged_and_replicated(tmp_path: Path) -> None:
    """kill -9 of the master: sends get 503 until the sentinels promote the replica, then succeed
    (retried with the same client_msg_id); both readers get every acknowledged message once, in
    order; /readyz says 503 during the failover and 200 after."""
    sentinels = SentinelSet(tmp_path / "redis")
    with (
        sentinels.running(),
        instances(sentinels.url, tmp_path, ChatSettings(rate=1000, burst=1000)) as (one, two),
        httpx.Client(base_url=one.url, timeout=10) as h1,
        httpx.Client(base_url=two.url, timeout=10) as h2,
    ):
        alice, bob, carol = Person(h1, "alice"), Person(h2, "bob"), Person(h1, "carol")
        since = bob.get(MESSAGES).json()["latest_event_id"]
        readers = [
            Follower([two.url], bob, since, "text of end"),
            Follower([one.url], carol, since, "text of end"),
        ]
        for reader in readers:
            reader.start()
        ready = Readiness([one.url, two.url])
        ready.start()
        acked: dict[str, int] = {}
        refused: list[str] = []

        def send(cmid: str) -> bool:
            r = alice.send("general", f"text of {cmid}", cmid)
            if r.status_code == 201:
                acked[cmid] = r.json()["id"]
                return True
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1
            refused.append(cmid)
            return False

        for i in range(10):
            assert send(f"before{i}")
        # Acknowledged and replicated: WAIT covers every write the master took before this one.
        with redis.Redis(port=sentinels.master.port, socket_timeout=3) as master:
            master.set("test:replicated", "1")
            assert master.wait(1, 2000) == 1

        killed = time.monotonic()
        sentinels.master.kill()
        i, back = 0, None
        while time.monotonic() - killed < 25:
            ok = send(f"during{i}")
            i += 1
            if ok and back is None and refused:
                back = time.monotonic() - killed
            if back is not None and time.monotonic() - killed > back + 0.5:
                break  # half a second of chat on the new master
            time.sleep(0.05)
        assert back is not None, "sends never succeeded again after the failover"
        assert sentinels.master_port() == sentinels.replica.port
        for cmid in list(refused):  # what the page does: the same client_msg_id until stored
            for _ in range(50):
                if send(cmid):
                    break
                time.sleep(0.1)
            assert cmid in acked
        assert send("end")
        for reader in readers:
            reader.done.wait(30)
        ready.stop.set()
        ready.join(5)

        for reader in readers:
            assert reader.error is None
            assert reader.done.is_set(), "a reader did not resume after the failover"
            got = messages_of(reader.events)
            assert [m["id"] for m in got] == sorted(acked.values())  # every one, in order, once
            assert [m["client_msg_id"] for m in got] == sorted(acked, key=acked.__getitem__)
        during = [s for t, _, s in ready.seen if t > killed]
        assert 503 in during, "/readyz never said not ready during the failover"
        for base in (one.url, two.url):
            assert [s for _, b, s in ready.seen if b == base][-1] == 200
        first_503 = min(t for t, _, s in ready.seen if t > killed and s == 503) - killed
        print(
            f"\nfailover: first /readyz 503 {first_503:.1f} s after the kill, sends back after {back:.1f} s; "
            f"{len(acked)} acknowledged ({len(refused)} refused with 503 meanwhile, then stored on retry), "
            f"each delivered once in order to both readers ({[r.reconnects for r in readers]} reconnects)"
        )
