"""The load generator: raw asyncio protocols on uvloop in worker processes, so the client stays cheap.

Each worker opens its share of SSE connections, says "ready", then reads every connection,
checking that ``seq`` goes up by exactly one each event (losses, gaps, duplicates, reorders) and
recording publish-to-receive latency from the event's ``t``. It reports its own CPU time.

A connection is an ``asyncio.Protocol`` fed by the loop's callbacks (no task, no ``StreamReader``,
no timer per read): reading 1,000 streams costs a fraction of what it costs the server to write
them, so the latencies measured are the server's and not the client's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import resource
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

EVENT_RE = re.compile(rb'"seq": ?(\d+), ?"t": ?([0-9.e+-]+)')
ID_RE = re.compile(rb"(?m)^id: ([^\r\n]+)")
SEQ_KEY = b'"seq":'
MAX_MISSING = 1_000_000  # a bound on the skipped seqs remembered per connection


@dataclass
class ConnResult:
    received: int = 0
    errors: int = 0  # gaps, duplicates or reorders (one per write that had any)
    # Exact, in the strict check: events skipped (never came, though later ones did), events that
    # came twice, and skipped events that came later (out of order).
    dups: int = 0
    reorders: int = 0
    missing: set[int] = field(default_factory=set)
    ended_early: bool = False
    first_seq: int | None = None
    last_seq: int | None = None
    last_id: str | None = None
    last_at: float = 0.0
    latencies: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)  # each latency's publish time, to see a backlog grow


class SseStream(asyncio.Protocol):
    """One SSE connection: HTTP head, chunked framing, then event checks, all in ``data_received``."""

    def __init__(
        self, request: bytes, res: ConnResult, want: int, keep_latency: bool, strict: bool, done: Done
    ) -> None:
        self.request = request
        self.res = res
        self.want = want
        self.keep_latency = keep_latency
        self.strict = strict
        self.done = done
        self.raw = b""  # an incomplete chunk (or HTTP head) waiting for the rest
        self.pending = b""  # de-chunked text after the last complete event
        self.in_body = False
        self.finished = False  # done (everything wanted came, or the stream ended): counted in ``done``
        self.stopped = False  # the worker stopped reading: whatever comes now is not counted
        self.expected: int | None = None
        # With latencies kept, what arrives is only stored (with its arrival time) and its events
        # counted; parsing and checking wait for :meth:`flush`, after the run, so that the client's
        # CPU during the run is one append per read, not a parse per event.
        self.defer = keep_latency
        # Two flat lists, not a list of tuples: floats and bytes are not tracked by the garbage
        # collector, so a growing store does not make the client's collections slower.
        self.stored_at: list[float] = []
        self.stored: list[bytes] = []
        self.counted = 0
        self.tail = b""
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the headers: {exc!r}"))
        self._finish(ended=True)

    def _finish(self, ended: bool) -> None:
        self.res.ended_early = self.res.ended_early or ended
        if not self.finished:
            self.finished = True
            self.done.one()

    def flush(self) -> None:
        """Parse and check what was stored during the run (see ``defer``)."""
        stored, self.stored = self.stored, []
        stored_at, self.stored_at = self.stored_at, []
        for now, data in zip(stored_at, stored, strict=True):
            self._feed(data, now)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            return
        now = time.time()
        if self.defer and self.in_body:
            self.stored_at.append(now)
            self.stored.append(data)
            joined = self.tail + data  # a key split between two reads is counted once
            self.counted += joined.count(SEQ_KEY)
            self.tail = joined[-(len(SEQ_KEY) - 1) :]
            if self.counted >= self.want or data.endswith(b"\r\n0\r\n\r\n"):
                self._finish(ended=self.counted < self.want)
            return
        self._feed(data, now)

    def _feed(self, data: bytes, now: float) -> None:
        if self.raw:
            data = self.raw + data
            self.raw = b""
        if not self.in_body:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.raw = data
                return
            first = data[: data.find(b"\r\n")]
            if b" 200 " not in first:
                self.opened.set_exception(ConnectionError(first.decode(errors="replace")))
                self.close()
                return
            data = data[end + 4 :]
            self.in_body = True
            self.opened.set_result(None)
        # HTTP/1.1 chunked framing (our servers send no chunk extensions); an incomplete chunk
        # waits in ``raw`` for the rest.
        parts = []
        pos, size, ended = 0, len(data), False
        while True:
            nl = data.find(b"\r\n", pos)
            if nl < 0:
                break
            length = int(data[pos:nl], 16)
            if length == 0:
                ended = True
                break
            stop = nl + 2 + length
            if stop + 2 > size:
                break
            parts.append(data[nl + 2 : stop])
            pos = stop + 2
        if pos < size and not ended:
            self.raw = data[pos:]
        if self.pending:
            parts.insert(0, self.pending)
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        if b"\r" in body:
            body = body.replace(b"\r\n", b"\n")  # Litestar's ServerSentEvent (the baseline) ends lines with CRLF
        cut = body.rfind(b"\n\n") + 2
        if cut == 1:
            self.pending = body
        else:
            self.pending = body[cut:]
            self._check(body[:cut] if cut < len(body) else body, now)
        if ended:
            self._finish(ended=self.res.received < self.want)

    def _check(self, complete: bytes, now: float) -> None:
        res = self.res
        if self.keep_latency or self.strict:
            expected = self.expected
            errors = 0
            latencies, sent = res.latencies, res.sent
            keep = self.keep_latency
            found = EVENT_RE.findall(complete)
            for s, t in found:
                seq = int(s)
                if expected is None or seq == expected:
                    expected = seq + 1
                elif seq > expected:  # a gap: remember what was skipped, it may still come
                    errors += 1
                    if len(res.missing) < MAX_MISSING:
                        res.missing.update(range(expected, min(seq, expected + MAX_MISSING)))
                    expected = seq + 1
                else:
                    errors += 1
                    if seq in res.missing:
                        res.missing.discard(seq)
                        res.reorders += 1
                    else:
                        res.dups += 1
                if keep:
                    ts = float(t)
                    sent.append(ts)
                    latencies.append(now - ts)
            if found:
                if res.first_seq is None:
                    res.first_seq = int(found[0][0])
                # A gap, duplicate or reorder counts once per write, as in the cheap check.
                res.errors += 1 if errors else 0
                res.last_seq = expected - 1  # type: ignore[operator]
                self.expected = expected
                res.received += len(found)
                res.last_at = now
        else:
            # Cheap check for big bursts: the count of events plus the first and last seq. A loss or
            # a duplicate breaks "last == first + count - 1"; a reorder across writes breaks "first".
            count = complete.count(SEQ_KEY)
            if count:
                head = EVENT_RE.search(complete)
                tail = EVENT_RE.search(complete, complete.rfind(SEQ_KEY)) if count > 1 else head
                if head is None or tail is None:
                    res.errors += 1
                    return
                a, b = int(head.group(1)), int(tail.group(1))
                if b != a + count - 1 or (self.expected is not None and a != self.expected):
                    res.errors += 1
                if res.first_seq is None:
                    res.first_seq = a
                self.expected = b + 1
                res.last_seq = b
                res.received += count
                res.last_at = now
        if b"id: " in complete:
            ids = ID_RE.findall(complete)
            if ids:
                res.last_id = ids[-1].decode()
        if res.received >= self.want:
            self._finish(ended=False)


class Done:
    """Counts connections that are done (got everything, or ended); wakes the worker at ``total``."""

    def __init__(self) -> None:
        self.count = 0
        self.total: int | None = None
        self.all: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def one(self) -> None:
        self.count += 1
        self.check()

    def check(self) -> None:
        if self.total is not None and self.count >= self.total and not self.all.done():
            self.all.set_result(None)


async def _open(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    res: ConnResult,
    want: int,
    opts: tuple[bool, bool],
    done: Done,
) -> SseStream:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n{extra}\r\n".encode()
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(lambda: SseStream(request, res, want, *opts, done), host, port)
    try:
        await asyncio.wait_for(stream.opened, 60)
    except BaseException:
        stream.close()
        raise
    return stream


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on uvloop (installed with ``uvicorn[standard]``, which the servers use too):
    a client that costs less CPU leaves more of the two cores to the server it measures."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - plain asyncio works, at a higher client cost
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def raise_nofile() -> None:
    """Open-file limit up to the hard limit: a worker holds thousands of sockets."""
    with contextlib.suppress(ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
    raise_nofile()
    run_loop(_worker(conn, host, port, n_conns, want, timeout, keep_latency, path, headers or {}, strict))


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
    loop = asyncio.get_running_loop()
    done = Done()
    opened: list[tuple[SseStream, ConnResult]] = []
    connect_errors = 0
    for start in range(0, n_conns, 100):
        results = [ConnResult() for _ in range(min(100, n_conns - start))]
        batch = await asyncio.gather(
            *(_open(host, port, path, headers, res, want, (keep_latency, strict), done) for res in results),
            return_exceptions=True,
        )
        for item, res in zip(batch, results, strict=True):
            if isinstance(item, BaseException):
                connect_errors += 1
            else:
                opened.append((item, res))
    connect_cpu = time.process_time() - t0
    conn.send({"ready": len(opened), "connect_errors": connect_errors})
    command: dict[str, Any] = await loop.run_in_executor(None, conn.recv)  # {"go": deadline} or {"stop": True}
    if "go" in command:
        deadline = float(command["go"])
        if command.get("first") is not None:  # the first seq to come: a lost first event is a gap
            for stream, _ in opened:
                stream.expected = int(command["first"])
        done.total = len(opened)
        done.check()
        # No collections while reading: a pause here would show as the server's latency.
        gc.disable()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.all, max(0.0, deadline - time.time()))
        finally:
            gc.enable()
    elif "hold" in command:
        conn.send({"held": True})
        await loop.run_in_executor(None, conn.recv)
    for stream, _ in opened:
        stream.stopped = True  # what arrives from now on is not counted
        stream.close()
    run_cpu = time.process_time() - t0
    for stream, _ in opened:
        stream.flush()
    results = [res for _, res in opened]
    lat = [x for res in results for x in res.latencies]
    sent = [x for res in results for x in res.sent]
    conn.send(
        {
            "connections": len(opened),
            "connect_errors": connect_errors,
            "received": sum(r.received for r in results),
            "errors": sum(r.errors for r in results),
            "ended_early": sum(1 for r in results if r.ended_early and r.received < want),
            "short": sum(1 for r in results if r.received < want),
            "gaps": sum(len(r.missing) for r in results),
            "dups": sum(r.dups for r in results),
            "reorders": sum(r.reorders for r in results),
            # Not come by the deadline (after the last one that did): a server behind, not a loss.
            "late": sum(max(0, want - (r.received - r.dups) - len(r.missing)) for r in results),
            "last_at": max((r.last_at for r in results), default=0.0),
            "latencies": lat,
            "sent": sent,
            "last_ids": [r.last_id for r in results],
            "cpu_s": run_cpu,  # connecting and reading: what competed with the server
            "check_cpu_s": time.process_time() - t0 - run_cpu,  # parsing deferred until after the run
            "connect_cpu_s": connect_cpu,
        }
    )
