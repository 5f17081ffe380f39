"""``python -m bench mux`` (or ``python -m bench.mux``): the shared connection against plain streams.

For ``browsers`` simulated browsers with ``topics`` streams each, on the bench server
(``python -m bench.server``, the hub as the apps use it, behind ``shared.mux`` as every server is):

- **plain**: each stream its own connection (``GET /events``), as pages did before issue 15;
- **mux**: one ``GET /sse/mux`` per browser and one ``POST`` subscribing its ``topics`` topics,
  each the same ``/events`` stream.

Printed per variant: the time to connect every stream (until each plain stream has its first
bytes, or each mux topic its ``t open``), the server's resident memory and CPU for it (per
browser), then a burst of events fanned out to every stream (deliveries per second and per
server CPU second), then events at a steady 50 per second for 4 s (the server's CPU share, and its
CPU time per delivery); every stream is checked to get every event. Not a timed test: figures for the
README, on loopback, bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.__main__ import SERVER_PIDS, bench_server, process_cpu, stats, table

_PLAIN_EVENT = b"event: tick\n"
_MUX_EVENT = b"event: m\n"
_OPEN = b'"state":"open"'


@dataclass
class Conn:
    """One raw SSE connection that counts a marker in what it receives."""

    marker: bytes
    raw_head: bytes = b""
    first: bytes = b""
    count: int = 0
    opened: int = 0  # mux: topics reported open
    got_first: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    writer: asyncio.StreamWriter | None = None

    async def run(self, reader: asyncio.StreamReader) -> None:
        tail = b""
        keep = max(len(self.marker), len(_OPEN)) - 1
        try:
            self.raw_head = await reader.readuntil(b"\r\n\r\n")
            while chunk := await reader.read(262144):
                if not self.got_first.is_set():
                    self.first += chunk
                    if b"\n\n" in self.first:
                        self.got_first.set()
                # The tail joins a marker split between two reads; those wholly in it were counted.
                data = tail + chunk
                self.count += data.count(self.marker) - tail.count(self.marker)
                self.opened += data.count(_OPEN) - tail.count(_OPEN)
                tail = data[-keep:]
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.got_first.set()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()


async def open_conn(port: int, path: str, marker: bytes) -> Conn:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    conn = Conn(marker, writer=writer)
    conn.task = asyncio.create_task(conn.run(reader))
    return conn


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _hello(first: bytes) -> dict[str, Any]:
    start = first.index(b"data: ") + 6
    return dict(json.loads(first[start : first.index(b"\n", start)]))


async def _variant(
    variant: str, browsers: int, topics: int, events: int, size: int, rate: float = 50.0, paced_s: float = 4.0
) -> dict[str, Any]:
    with bench_server("hub") as url:
        pid = SERVER_PIDS[url]
        port = int(url.rsplit(":", 1)[1])
        before = stats(url)
        cpu0, began = process_cpu(pid), time.perf_counter()
        conns: list[Conn] = []
        if variant == "plain":
            for _ in range(browsers):
                conns += await asyncio.gather(*(open_conn(port, "/events", _PLAIN_EVENT) for _ in range(topics)))
            await until(lambda: all(c.got_first.is_set() for c in conns), 60, "every plain stream")
        else:
            conns = list(await asyncio.gather(*(open_conn(port, "/sse/mux", _MUX_EVENT) for _ in range(browsers))))
            await until(lambda: all(c.got_first.is_set() for c in conns), 60, "every mux stream")
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:

                async def subscribe(conn: Conn) -> None:
                    hello = _hello(conn.first)
                    body = {"subscribe": [{"k": f"t{i}", "path": "/events"} for i in range(topics)]}
                    r = await http.post(
                        f"/sse/mux/{hello['conn']}", json=body, headers={"authorization": f"Bearer {hello['token']}"}
                    )
                    r.raise_for_status()

                await asyncio.gather(*(subscribe(c) for c in conns))
            await until(lambda: all(c.opened >= topics for c in conns), 60, "every mux topic open")
        connect_s = time.perf_counter() - began
        connect_cpu = process_cpu(pid) - cpu0
        await asyncio.sleep(0.5)  # let the server settle before reading its memory
        after = stats(url)
        streams = browsers * topics
        assert after["subscribers"] == streams, (after["subscribers"], streams)

        # Fan-out: every stream gets every event.
        per_conn = events if variant == "plain" else events * topics
        cpu1, t0 = process_cpu(pid), time.perf_counter()
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            (await http.post("/publish", json={"n": events, "size": size})).raise_for_status()
        await until(lambda: all(c.count >= per_conn for c in conns), 120, "every event on every stream")
        fan_s = time.perf_counter() - t0
        fan_cpu = process_cpu(pid) - cpu1
        # At a steady rate (as apps publish): the server's CPU for the same deliveries.
        paced_n = int(rate * paced_s)
        per_conn += paced_n if variant == "plain" else paced_n * topics
        cpu2, t2 = process_cpu(pid), time.perf_counter()
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            body = {"n": paced_n, "size": size, "rate": rate}
            (await http.post("/publish", json=body)).raise_for_status()
        await until(lambda: all(c.count >= per_conn for c in conns), 60, "every paced event on every stream")
        paced_cpu = process_cpu(pid) - cpu2
        paced_wall = time.perf_counter() - t2
        lost = sum(max(0, per_conn - c.count) for c in conns)
        extra = sum(max(0, c.count - per_conn) for c in conns)
        for c in conns:
            c.close()
        deliveries = streams * events
        return {
            "variant": variant,
            "browsers": browsers,
            "streams": streams,
            "connections": len(conns),
            "connect_ms_per_browser": round(connect_s * 1000 / browsers, 2),
            "connect_cpu_ms_per_browser": round(connect_cpu * 1000 / browsers, 2),
            "rss_kib_per_browser": round((after["rss"] - before["rss"]) / 1024 / browsers, 1),
            "events": events,
            "deliveries_per_s": round(deliveries / fan_s),
            "per_server_cpu_s": round(deliveries / fan_cpu) if fan_cpu > 0 else 0,
            "paced_rate": rate,
            "paced_server_cpu_pct": round(100 * paced_cpu / paced_wall, 1),
            "paced_us_per_delivery": round(paced_cpu * 1e6 / (streams * paced_n), 2),
            "lost": lost,
            "extra": extra,
        }


async def run(browsers: int, topics: int, events: int, size: int) -> list[dict[str, Any]]:
    rows = []
    for variant in ("plain", "mux"):
        row = await _variant(variant, browsers, topics, events, size)
        print(
            f"{variant:5} {row['streams']} streams on {row['connections']} connections: "
            f"{row['connect_ms_per_browser']} ms/browser, {row['rss_kib_per_browser']} KiB/browser, "
            f"{row['deliveries_per_s']:,} deliveries/s lost={row['lost']}",
            flush=True,
        )
        rows.append(row)
    return rows


KEYS = [
    "variant",
    "browsers",
    "streams",
    "connections",
    "connect_ms_per_browser",
    "connect_cpu_ms_per_browser",
    "rss_kib_per_browser",
    "events",
    "deliveries_per_s",
    "per_server_cpu_s",
    "paced_rate",
    "paced_server_cpu_pct",
    "paced_us_per_delivery",
    "lost",
    "extra",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench mux", description="The shared connection (/sse/mux) vs plain streams.")
    parser.add_argument("--browsers", type=int, default=50, help="simulated browsers (default 50)")
    parser.add_argument("--topics", type=int, default=20, help="streams per browser (default 20)")
    parser.add_argument("--events", type=int, default=1000, help="events in the fan-out burst (default 1000)")
    parser.add_argument("--size", type=int, default=200, help="bytes per event (default 200)")
    parser.add_argument("--quick", action="store_true", help="5 browsers, 50 events")
    args = parser.parse_args(argv)
    if args.quick:
        args.browsers, args.events = 5, 50
    rows = asyncio.run(run(args.browsers, args.topics, args.events, args.size))
    print()
    print(table(rows, KEYS))
    return 0 if all(r["lost"] == 0 and r["extra"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
