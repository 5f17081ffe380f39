"""``python -m bench.churn``: connect/disconnect churn on /basics/ and /bidi/, then look for leaks.

    python -m bench.churn                  # 10,000 cycles, prints figures, exit 1 on a leak
    python -m bench.churn --cycles 1500 --json out.json

The server (both demos on one uvicorn, as in ``python -m showcase``) runs in a thread of this
process; the clients are raw asyncio sockets in the main thread. A cycle is one of six kinds,
so that a third end abruptly and a third are /bidi/ sessions:

- ``tick`` (2/9): read one live event, then close.   ``resume`` (2/9): the same with Last-Event-ID.
- ``rst`` (1/9): read the headers, then reset (SO_LINGER 0).
- ``unread`` (1/9): send the request, close without reading a byte.
- ``answer`` (2/9): open a /bidi/ session, trigger a request, answer it by POST, close.
- ``abandon`` (1/9): open a session, trigger a request, reset once it arrives; the trigger stays
  in flight until the session's grace period ends (410).

After a warm-up and after the run (once the grace period is over) it measures, in the server's
loop: subscribers (``hub.stats()``), sessions and pending requests (``Correlator.stats()``),
streams still counted by the limiter and the write watchdog, and the asyncio tasks; in the
process: RSS after ``gc.collect()``. Log records at WARNING and up, Python warnings and
unraisable exceptions ("Task was destroyed", "Exception ignored in ...") are collected during
the whole run. Everything talks to 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import re
import socket
import struct
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from litestar import Litestar

from shared.backends.memory import MemoryBackend
from shared.hub import Hub
from shared.mount import Mounts
from shared.server import Server, make_config
from showcase import basics, bidi

__all__ = ["KINDS", "RSS_LIMIT_MIB", "run"]

KINDS = ("tick", "resume", "rst", "unread", "answer", "abandon")
# The kind of cycle i is SCHEDULE[i % 9]: a third abrupt (rst, unread, abandon), a third /bidi/.
SCHEDULE = ("tick", "rst", "answer", "resume", "unread", "answer", "tick", "abandon", "resume")
ABRUPT = {"rst", "unread", "abandon"}
RSS_LIMIT_MIB = 10.0
CYCLE_TIMEOUT = 15.0

_TICK = re.compile(rb"id: ([^\n]+)\nevent: tick\n")
_SESSION = re.compile(rb"event: session\ndata: (\{[^\n]*\})\n\n")
_REQUEST = re.compile(rb"event: request\ndata: (\{[^\n]*\})\n\n")
_RETRY = b"retry: 3000\n\n"


# -- the server, in a thread of this process ---------------------------------------------------


class ServedApp:
    """``/basics`` and ``/bidi`` on our uvicorn ``Server``, in a thread, on a free loopback port."""

    def __init__(self, grace: float, tick_interval: float) -> None:
        self.basics_hub = Hub(MemoryBackend(max_events=1000))
        self.bidi_hub = Hub(MemoryBackend())
        self.basics_app = basics.create_app(self.basics_hub, interval=tick_interval)
        self.bidi_app = bidi.create_app(self.bidi_hub, grace=grace)
        self.app = Mounts(
            {"/basics": self.basics_app, "/bidi": self.bidi_app},
            fallback=Litestar(route_handlers=[], openapi_config=None),
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
        self.port: int = sock.getsockname()[1]
        self.server = Server(make_config(self.app, "127.0.0.1", self.port, log_level="warning"), self.app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the churn server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        if self.thread.is_alive():
            raise RuntimeError("the churn server did not stop within 30 s")

    def call(self, fn: Callable[[], Awaitable[Any]], timeout: float = 10) -> Any:
        """Run ``fn()`` in the server's loop and wait for its result (from another thread)."""
        assert self.server.loop is not None
        return asyncio.run_coroutine_threadsafe(_wrap(fn), self.server.loop).result(timeout)

    def probe(self) -> dict[str, Any]:
        """The server's bookkeeping, read inside its own loop."""

        async def look() -> dict[str, Any]:
            me = asyncio.current_task()
            tasks = Counter(_task_name(t) for t in asyncio.all_tasks() if t is not me and not t.done())
            correlator = self.bidi_app.state.correlator
            return {
                "tasks": tasks,
                "basics": self.basics_hub.stats(),
                "bidi": self.bidi_hub.stats(),
                "correlator": correlator.stats(),
                "limiter": self.basics_hub.limiter.stats()["streams"] + self.bidi_hub.limiter.stats()["streams"],
                "watchdog": self.basics_hub.watchdog.stats()["streams"] + self.bidi_hub.watchdog.stats()["streams"],
                "connections": len(self.server.server_state.connections),
                "backend_topics": len(getattr(self.bidi_hub.backend, "_topics", ())),
            }

        result: dict[str, Any] = self.call(look)
        return result


async def _wrap(fn: Callable[[], Awaitable[Any]]) -> Any:
    return await fn()


def _task_name(task: asyncio.Task[Any]) -> str:
    name = task.get_name()
    coro = task.get_coro()
    where = getattr(coro, "__qualname__", type(coro).__name__)
    return where if name.startswith("Task-") else f"{name} ({where})"


# -- what goes wrong, collected ---------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def collect_problems() -> Iterator[dict[str, list[str]]]:
    """Log records at WARNING+ (root and uvicorn's own loggers), warnings, unraisable exceptions."""
    found: dict[str, list[str]] = {"log": [], "warnings": [], "unraisable": []}
    handler = _Records()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error")]
    for lg in loggers:
        lg.addHandler(handler)
    old_hook = sys.unraisablehook

    def unraisable(u: Any) -> None:
        found["unraisable"].append(f"{u.err_msg or 'Exception ignored in'}: {u.object!r}: {u.exc_value!r}")

    sys.unraisablehook = unraisable
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
            gc.collect()  # ResourceWarnings of unclosed sockets show up when they are collected
    finally:
        sys.unraisablehook = old_hook
        for lg in loggers:
            lg.removeHandler(handler)
    seen: set[int] = set()
    for record in handler.records:
        if id(record) not in seen:  # a record can reach the handler through two loggers
            seen.add(id(record))
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += f" [{record.exc_info[1]!r}]"
            found["log"].append(f"{record.levelname} {record.name}: {text}")
    found["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]


# -- the clients -------------------------------------------------------------------------------


@dataclass
class Tally:
    done: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)
    triggers: Counter[str] = field(default_factory=Counter)  # "answer 200", "abandon 410", ...
    last_tick_id: str | None = None
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    def error(self, kind: str, exc: BaseException) -> None:
        self.errors[kind] += 1
        if len(self.first_errors) < 10:
            self.first_errors.append(f"{kind}: {exc!r}")


async def _open(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[Any, Any, bytearray]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{extra}\r\n".encode())
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("closed before the response headers")
        buf += data
    status = bytes(buf[: buf.index(b"\r\n")])
    if b" 200 " not in status:
        writer.close()
        raise ConnectionError(status.decode(errors="replace"))
    return reader, writer, buf


async def _until(reader: asyncio.StreamReader, buf: bytearray, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
    while True:
        found = pattern.search(buf)
        if found is not None:
            return found
        data = await reader.read(65536)
        if not data:
            raise ConnectionError(f"stream ended before {pattern.pattern!r}")
        buf += data


async def _graceful(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN, unsent data is dropped."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _trigger(http: httpx.AsyncClient, client_id: str, kind: str, tally: Tally) -> None:
    try:
        r = await http.post("/bidi/trigger", json={"client_id": client_id, "method": "churn", "timeout_s": 20})
        tally.triggers[f"{kind} {r.status_code}"] += 1
    except Exception as exc:
        tally.error(f"{kind}-trigger", exc)


async def cycle(i: int, port: int, http: httpx.AsyncClient, tally: Tally, tag: str) -> None:
    kind = SCHEDULE[i % len(SCHEDULE)]
    if kind == "tick":
        reader, writer, buf = await _open(port, "/basics/events")
        tally.last_tick_id = (await _until(reader, buf, _TICK)).group(1).decode()
        await _graceful(writer)
    elif kind == "resume":
        headers = {"Last-Event-ID": tally.last_tick_id} if tally.last_tick_id else {}
        reader, writer, buf = await _open(port, "/basics/events", headers)
        await _until(reader, buf, _TICK)
        await _graceful(writer)
    elif kind == "rst":
        reader, writer, buf = await _open(port, "/basics/events")
        await _until(reader, buf, re.compile(re.escape(_RETRY)))
        _reset(writer)
    elif kind == "unread":
        # Send the request, then go without reading a byte; what the server sent is left unread,
        # so the kernel answers it with a reset.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /basics/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await asyncio.sleep((i % 7) * 0.01)
        writer.close()
    else:  # answer, abandon: a /bidi/ session with a request in flight
        client_id = f"churn-{tag}-{i}"
        reader, writer, buf = await _open(port, f"/bidi/events?client_id={client_id}")
        session = json.loads((await _until(reader, buf, _SESSION)).group(1))
        pending = asyncio.create_task(_trigger(http, client_id, kind, tally))
        tally.in_flight.add(pending)
        pending.add_done_callback(tally.in_flight.discard)
        request = json.loads((await _until(reader, buf, _REQUEST)).group(1))
        if kind == "abandon":
            _reset(writer)  # the trigger waits for the grace period, then gets 410
        else:
            r = await http.post(
                "/bidi/respond",
                json={"jsonrpc": "2.0", "id": request["id"], "result": {"ok": True}},
                headers={"Authorization": f"Bearer {session['token']}"},
            )
            if r.status_code != 200:
                raise ConnectionError(f"respond: {r.status_code} {r.text}")
            await pending
            await _graceful(writer)
    tally.done[kind] += 1


async def churn(
    served: ServedApp, start: int, cycles: int, concurrency: int, tag: str, deadline: float
) -> tuple[Tally, float]:
    """``cycles`` cycles, ``concurrency`` at a time; waits for the triggers left in flight."""
    tally = Tally()
    limits = httpx.Limits(max_connections=concurrency * 4, max_keepalive_connections=concurrency * 4)
    next_i = start
    began = time.monotonic()
    async with httpx.AsyncClient(base_url=served.url, limits=limits, timeout=30) as http:

        async def worker() -> None:
            nonlocal next_i
            while next_i < start + cycles and time.monotonic() < deadline:
                i, next_i = next_i, next_i + 1
                try:
                    async with asyncio.timeout(CYCLE_TIMEOUT):
                        await cycle(i, served.port, http, tally, tag)
                except Exception as exc:
                    tally.error(SCHEDULE[i % len(SCHEDULE)], exc)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - began
        if tally.in_flight:
            await asyncio.wait(set(tally.in_flight), timeout=60)
    return tally, elapsed


# -- the run -----------------------------------------------------------------------------------


def _rss_mib() -> float:
    gc.collect()
    gc.collect()
    return float(psutil.Process().memory_info().rss) / 2**20


def _settle(served: ServedApp, limit: float) -> dict[str, Any]:
    """Wait (bounded) until no stream, session, pending request or connection is left."""
    deadline = time.monotonic() + limit
    while True:
        p = served.probe()
        quiet = (
            p["basics"]["subscribers"] == 0
            and p["bidi"]["subscribers"] == 0
            and p["correlator"] == {"sessions": 0, "pending": 0}
            and p["limiter"] == 0
            and p["watchdog"] == 0
            and p["connections"] == 0
        )
        if quiet or time.monotonic() > deadline:
            return p
        time.sleep(0.1)


def run(
    cycles: int = 10_000,
    *,
    concurrency: int = 32,
    warmup: int | None = None,
    grace: float = 0.5,
    tick_interval: float = 0.05,
    time_limit: float = 600.0,
    out: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run the churn and return the figures; ``figures["problems"]`` lists what leaked."""
    say = out or (lambda _line: None)
    warmup = max(300, cycles // 10) if warmup is None else warmup
    deadline = time.monotonic() + time_limit
    quiet = logging.getLogger("httpx")
    was = quiet.level
    quiet.setLevel(logging.WARNING)  # one INFO line per request otherwise
    with collect_problems() as found, contextlib.ExitStack() as restore:
        restore.callback(quiet.setLevel, was)
        served = ServedApp(grace, tick_interval)
        served.start()
        try:
            with asyncio.Runner() as runner:
                say(f"warm-up: {warmup} cycles")
                runner.run(churn(served, 0, warmup, concurrency, "w", deadline))
                before = _settle(served, grace + 10)
                rss_before = _rss_mib()
                say(f"churn: {cycles} cycles, {concurrency} at a time")
                tally, elapsed = runner.run(churn(served, warmup, cycles, concurrency, "c", deadline))
                after = _settle(served, grace + 15)
                rss_after = _rss_mib()
                after = served.probe()
        finally:
            served.stop()
    left = after["tasks"] - before["tasks"]
    figures: dict[str, Any] = {
        "cycles": sum(tally.done.values()) + sum(tally.errors.values()),
        "cycles_asked": cycles,
        "seconds": round(elapsed, 2),
        "cycles_per_s": round(cycles / max(elapsed, 1e-9)),
        "concurrency": concurrency,
        "done": dict(tally.done),
        "abrupt": sum(n for k, n in tally.done.items() if k in ABRUPT),
        "errors": dict(tally.errors),
        "first_errors": tally.first_errors,
        "triggers": dict(tally.triggers),
        "tasks_before": sum(before["tasks"].values()),
        "tasks_after": sum(after["tasks"].values()),
        "tasks_left": dict(left),
        "subscribers_left": after["basics"]["subscribers"] + after["bidi"]["subscribers"],
        "topics_left": after["basics"]["topics"] + after["bidi"]["topics"],
        "correlator": after["correlator"],
        "limiter_streams": after["limiter"],
        "watchdog_streams": after["watchdog"],
        "connections_left": after["connections"],
        "backend_topics_bidi": after["backend_topics"],
        "rss_before_mib": round(rss_before, 1),
        "rss_after_mib": round(rss_after, 1),
        "rss_growth_mib": round(rss_after - rss_before, 2),
        "log": found["log"],
        "task_destroyed": sum("Task was destroyed" in line for line in found["log"]),
        "warnings": found["warnings"],
        "unraisable": found["unraisable"],
    }
    figures["problems"] = _problems(figures)
    for line in report(figures):
        say(line)
    return figures


def _problems(f: dict[str, Any]) -> list[str]:
    problems = []
    if f["cycles"] < f["cycles_asked"]:
        problems.append(f"only {f['cycles']} of {f['cycles_asked']} cycles ran before the time limit")
    if f["errors"]:
        problems.append(f"cycles failed: {f['errors']} (first: {f['first_errors'][:3]})")
    bad_triggers = {k: n for k, n in f["triggers"].items() if k not in ("answer 200", "abandon 410")}
    if bad_triggers:
        problems.append(f"unexpected trigger outcomes: {bad_triggers}")
    if f["tasks_left"]:
        problems.append(f"asyncio tasks left over: {f['tasks_left']}")
    if f["subscribers_left"] or f["topics_left"]:
        problems.append(f"hub subscribers/topics left: {f['subscribers_left']}/{f['topics_left']}")
    if f["correlator"] != {"sessions": 0, "pending": 0}:
        problems.append(f"correlator not empty: {f['correlator']}")
    if f["limiter_streams"] or f["watchdog_streams"]:
        problems.append(f"streams still counted: limiter {f['limiter_streams']}, watchdog {f['watchdog_streams']}")
    if f["rss_growth_mib"] >= RSS_LIMIT_MIB:
        problems.append(f"RSS grew {f['rss_growth_mib']} MiB (limit {RSS_LIMIT_MIB})")
    for key in ("log", "warnings", "unraisable"):
        if f[key]:
            problems.append(f"{key}: {len(f[key])}, first: {f[key][:3]}")
    return problems


def report(f: dict[str, Any]) -> list[str]:
    kinds = ", ".join(f"{k} {f['done'].get(k, 0)}" for k in KINDS)
    return [
        f"cycles:        {f['cycles']} in {f['seconds']} s ({f['cycles_per_s']}/s), {f['abrupt']} abrupt",
        f"  kinds:       {kinds}; errors {sum(f['errors'].values())}",
        f"  triggers:    {f['triggers']}",
        f"tasks:         {f['tasks_before']} before, {f['tasks_after']} after; left over: {f['tasks_left'] or 'none'}",
        f"left:          subscribers {f['subscribers_left']}, topics {f['topics_left']}, "
        f"sessions {f['correlator']['sessions']}, pending {f['correlator']['pending']}, "
        f"limiter {f['limiter_streams']}, watchdog {f['watchdog_streams']}, connections {f['connections_left']}",
        f"  memory backend of /bidi/ keeps {f['backend_topics_bidi']} topics"
        + (" (a leak: one per client id ever seen, each ~1.7 KiB)" if f["backend_topics_bidi"] else ""),
        f"RSS:           {f['rss_before_mib']} MiB after warm-up, {f['rss_after_mib']} MiB after "
        f"({f['rss_growth_mib']:+.2f} MiB; limit {RSS_LIMIT_MIB})",
        f"log:           {len(f['log'])} warnings/errors ({f['task_destroyed']} 'Task was destroyed'), "
        f"{len(f['warnings'])} Python warnings, {len(f['unraisable'])} unraisable",
        "verdict:       " + ("OK" if not f["problems"] else "LEAK OR ERROR: " + "; ".join(f["problems"])),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.churn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10_000, help="connect/disconnect cycles (default 10000)")
    parser.add_argument("--concurrency", type=int, default=32, help="cycles at a time (default 32)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up cycles (default: max(300, cycles/10))")
    parser.add_argument("--time-limit", type=float, default=600.0, help="stop starting cycles after this (s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if not 1 <= args.cycles <= 1_000_000 or not 1 <= args.concurrency <= 512:
        parser.error("--cycles must be 1..1000000 and --concurrency 1..512")
    figures = run(args.cycles, concurrency=args.concurrency, warmup=args.warmup, time_limit=args.time_limit)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
