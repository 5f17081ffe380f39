"""The load generator: raw asyncio sockets in worker processes, so the client stays cheap.

Each worker opens its share of SSE connections, says "ready", then reads every connection,
checking that ``seq`` goes up by exactly one each event (losses, gaps, duplicates, reorders) and
recording publish-to-receive latency from the event's ``t``. It reports its own CPU time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

EVENT_RE = re.compile(rb'"seq": ?(\d+), ?"t": ?([0-9.e+-]+)')
ID_RE = re.compile(rb"(?m)^id: ([^\n]+)$")


@dataclass
class ConnResult:
    received: int = 0
    errors: int = 0  # gaps, duplicates or reorders
    ended_early: bool = False
    first_seq: int | None = None
    last_seq: int | None = None
    last_id: str | None = None
    last_at: float = 0.0
    latencies: list[float] = field(default_factory=list)


async def _open(
    host: str, port: int, path: str, headers: dict[str, str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n{extra}\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return reader, writer


def _dechunk(buf: bytearray) -> bytes:
    """Strip HTTP/1.1 chunked framing from what we have; keep an incomplete chunk in ``buf``."""
    out = bytearray()
    while True:
        nl = buf.find(b"\r\n")
        if nl < 0:
            break
        size = int(buf[:nl].split(b";", 1)[0] or b"0", 16)
        if size == 0:
            del buf[: nl + 2]
            out += b"\n\x00END\n"
            break
        if len(buf) < nl + 2 + size + 2:
            break
        out += buf[nl + 2 : nl + 2 + size]
        del buf[: nl + 2 + size + 2]
    return bytes(out)


async def _consume(
    reader: asyncio.StreamReader,
    want: int,
    deadline: float,
    res: ConnResult,
    keep_latency: bool,
    stop: asyncio.Event,
    strict: bool,
) -> None:
    raw = bytearray()
    pending = b""
    expected: int | None = None
    while res.received < want and not stop.is_set():
        left = deadline - time.time()
        if left <= 0:
            return
        try:
            data = await asyncio.wait_for(reader.read(1 << 18), left)
        except TimeoutError:
            return
        if not data:
            res.ended_early = True
            return
        raw += data
        # Litestar's ServerSentEvent (the baseline) ends lines with CRLF; ours with LF.
        body = pending + _dechunk(raw).replace(b"\r\n", b"\n")
        cut = body.rfind(b"\n\n")
        if cut < 0:
            pending = body
            continue
        complete, pending = body[: cut + 2], body[cut + 2 :]
        now = time.time()
        if keep_latency or strict:
            found = EVENT_RE.findall(complete)
            seqs = [int(s) for s, _ in found]
            if keep_latency:
                res.latencies.extend(now - float(t) for _, t in found)
        else:
            # Cheap check for big bursts: the count of events plus the first and last seq. A loss or
            # a duplicate breaks "last == first + count - 1"; a reorder across writes breaks "first".
            count = complete.count(b'"seq":')
            seqs = []
            if count:
                head = EVENT_RE.search(complete)
                tail = EVENT_RE.search(complete, complete.rfind(b'"seq":'))
                assert head is not None
                assert tail is not None
                a, b = int(head.group(1)), int(tail.group(1))
                seqs = [a] if count == 1 else [a, b]
                if b != a + count - 1:
                    res.errors += 1
                res.received += count - len(seqs)
        if seqs:
            start = expected if expected is not None else seqs[0]
            if seqs[0] != start or (strict and seqs != list(range(start, start + len(seqs)))):
                res.errors += 1
            if res.first_seq is None:
                res.first_seq = seqs[0]
            expected = seqs[-1] + 1
            res.last_seq = seqs[-1]
            res.received += len(seqs)
            res.last_at = now
        ids = ID_RE.findall(complete)
        if ids:
            res.last_id = ids[-1].decode()
        if b"\x00END" in complete:
            res.ended_early = True
            return


def worker(
    conn: Connection,
    host: str,
    port: int,
    n_conns: int,
    want: int,
    timeout: float,
    keep_latency: bool,
    path: str = "/events",
    headers: dict[str, str] | None = None,
    strict: bool = True,
) -> None:
    """Entry point of a worker process: connect, report ready, read, report results."""
    with contextlib.suppress(ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_worker(conn, host, port, n_conns, want, timeout, keep_latency, path, headers or {}, strict))


async def _worker(
    conn: Connection,
    host: str,
    port: int,
    n_conns: int,
    want: int,
    timeout: float,
    keep_latency: bool,
    path: str,
    headers: dict[str, str],
    strict: bool,
) -> None:
    t0 = time.process_time()
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    connect_errors = 0
    for start in range(0, n_conns, 100):
        batch = await asyncio.gather(
            *(_open(host, port, path, headers) for _ in range(min(100, n_conns - start))), return_exceptions=True
        )
        for item in batch:
            if isinstance(item, BaseException):
                connect_errors += 1
            else:
                opened.append(item)
    connect_cpu = time.process_time() - t0
    conn.send({"ready": len(opened), "connect_errors": connect_errors})
    command: dict[str, Any] = conn.recv()  # {"go": deadline} or {"stop": True}
    results = [ConnResult() for _ in opened]
    stop = asyncio.Event()
    if "go" in command:
        deadline = float(command["go"])
        await asyncio.gather(
            *(
                _consume(r, want, deadline, res, keep_latency, stop, strict)
                for (r, _), res in zip(opened, results, strict=True)
            )
        )
    elif "hold" in command:
        conn.send({"held": True})
        conn.recv()
    for _, w in opened:
        w.close()
    lat = [x for res in results for x in res.latencies]
    conn.send(
        {
            "connections": len(opened),
            "connect_errors": connect_errors,
            "received": sum(r.received for r in results),
            "errors": sum(r.errors for r in results),
            "ended_early": sum(1 for r in results if r.ended_early and r.received < want),
            "short": sum(1 for r in results if r.received < want),
            "last_at": max((r.last_at for r in results), default=0.0),
            "latencies": lat,
            "last_ids": [r.last_id for r in results],
            "cpu_s": time.process_time() - t0,
            "connect_cpu_s": connect_cpu,
        }
    )
