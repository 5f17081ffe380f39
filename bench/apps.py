"""Per-app scenarios: the chat, the dashboard and remote exec, each served as users run it.

Each app runs in a subprocess (``python -m bench.apps serve APP --port N --data-dir DIR``) on a
free loopback port; its CPU and RSS are read with psutil from here, by pid. Clients are worker
processes with raw asyncio sockets (as in ``bench/load.py``) that report their own CPU.

- **chat**: ``members`` people (each with a session of their own, as a room of real people) hold
  one room's stream; ``senders`` more people post ``rate`` messages a second between them, each
  at half the per-person rate limit. Measured per delivery: POST start -> arrival at the member
  (p50/p99/max), and that every member got every message once, in order (message ids only go up;
  each sender's messages arrive in the order sent, none skipped).
- **dashboard**: 0, 1 and ``viewers`` viewers of ``/dashboard/events`` at the default 1 s
  interval: server CPU % over the same window, frames per viewer, frames lost (``seq`` gaps).
- **exec**: a run that prints ``size`` bytes, watched live by ``viewers`` viewers (a viewer token
  for the run): MiB/s per viewer and in total, and byte-identical output (every viewer's byte
  count; a SHA-256 of the decoded bytes for one viewer per worker process).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
import psutil

from bench.load import raise_nofile, run_loop
from bench.wire import ChunkedEvents
from shared.decoder import Event

HOST = "127.0.0.1"
TOKEN_ENV = "BENCH_APP_TOKEN"
MIB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent  # where ``python -m bench.apps`` finds the apps
# Half the chat's default per-person limit (10 writes a second, bursts of 20), so no send is refused.
PER_SENDER_RATE = 5.0
ROOM = "general"


# -- the app servers ------------------------------------------------------------------------------


def serve_main(argv: list[str]) -> None:
    """``serve APP``: one app alone, bound to 127.0.0.1 (tokens from ``$BENCH_APP_TOKEN``)."""
    from shared.server import serve

    parser = argparse.ArgumentParser(prog="bench.apps serve")
    parser.add_argument("app", choices=["chat", "dashboard", "exec"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--policy", type=Path, help="exec: the policy file")
    args = parser.parse_args(argv)
    raise_nofile()
    token = os.environ.get(TOKEN_ENV)
    app: Any
    if args.app == "chat":
        from chat import create_app as chat_app

        app = chat_app(args.data_dir)
    elif args.app == "dashboard":
        from dashboard import create_app as dashboard_app

        app = dashboard_app(args.data_dir, control_token=token)
    else:
        from remote_exec import Policy
        from remote_exec import create_app as exec_app

        policy = Policy.load(args.policy) if args.policy else None
        app = exec_app(args.data_dir, token=token, policy=policy)
    serve(app, HOST, args.port, log_level="warning", backlog=8192)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class AppServer:
    """An app in a subprocess; ``cpu_s()`` and ``rss_mib()`` read its process (not its children)."""

    def __init__(self, app: str, data_dir: Path, extra: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = data_dir / f"{app}-server.log"
        self._log_file = self.log.open("wb")
        cmd = [sys.executable, "-m", "bench.apps", "serve", app, "--port", str(self.port)]
        cmd += ["--data-dir", str(data_dir / "data"), *extra]
        self.popen = subprocess.Popen(
            cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=ROOT
        )
        self.proc = psutil.Process(self.popen.pid)
        ready = {"chat": "/chat/", "dashboard": "/dashboard/", "exec": "/exec/"}[app]
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + ready, timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.popen.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"the {app} server did not start:\n{self.tail()}") from None
                time.sleep(0.1)

    def cpu_s(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def rss_mib(self) -> float:
        return round(float(self.proc.memory_info().rss) / MIB, 1)

    def wait_quiet(self, limit: float, busy: float = 0.15) -> float:
        """Wait (at most ``limit`` s) until the server used less than ``busy`` of a core for 0.5 s."""
        began = time.monotonic()
        last = self.cpu_s()
        while time.monotonic() - began < limit:
            time.sleep(0.5)
            now = self.cpu_s()
            if now - last < busy * 0.5:
                break
            last = now
        return time.monotonic() - began

    def tail(self) -> str:
        """The end of the server's output (for an error message)."""
        return self.log.read_bytes()[-3000:].decode(errors="replace")

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._log_file.close()


@contextlib.contextmanager
def app_server(app: str, data_dir: Path, extra: list[str] | None = None, token: str = "") -> Iterator[AppServer]:
    srv = AppServer(app, data_dir, extra or [], {TOKEN_ENV: token} if token else {})
    try:
        yield srv
    finally:
        srv.stop()


# -- raw HTTP and SSE -------------------------------------------------------------------------------


async def http(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, bytes]:
    """One request on a keep-alive connection: ``(status, raw headers, body)``."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    if body is not None:
        extra += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n".encode() + (body or b""))
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return status, head, await reader.readexactly(int(m.group(1))) if m else b""


class SseClient(asyncio.Protocol):
    """One SSE stream read with callbacks, not a task per connection: the cheapest client asyncio has.

    Sends the GET, checks for a ``200`` with a chunked body, then feeds every complete event block
    to ``consumer`` with the arrival time of the bytes that completed it.
    """

    def __init__(self, request: bytes, consumer: Consumer) -> None:
        self.request = request
        self.consumer = consumer
        self.parser = ChunkedEvents()
        self.head = bytearray()
        self.in_body = False
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = bytes(self.head[:end]), bytes(self.head[end + 4 :])
            self.in_body = True
            first = head.split(b"\r\n", 1)[0]
            if b" 200 " not in first or b"chunked" not in head.lower():
                self.opened.set_exception(ConnectionError(first.decode(errors="replace")))
                self.close()
                return
            self.opened.set_result(None)
        for event in self.parser.feed(data):
            self.consumer.feed(event, now)
        if self.parser.ended:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.consumer.ended = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the headers: {exc!r}"))

    def close(self) -> None:
        self.consumer.ended = True
        if self.transport is not None:
            self.transport.close()


async def open_stream(path: str, port: int, headers: dict[str, str], consumer: Consumer) -> SseClient:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n{extra}\r\n".encode()
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: SseClient(request, consumer), HOST, port)
    await asyncio.wait_for(client.opened, 60)
    return client


# -- what a connection checks ----------------------------------------------------------------------


class Consumer(Protocol):
    ended: bool

    def feed(self, event: Event, now: float) -> None: ...

    def done(self) -> bool: ...

    def summary(self) -> dict[str, Any]: ...


# The text of a bench message is "t=<send time>"; its client_msg_id is "b<sender>-<n>".
CHAT_MSG = re.compile(r'^\{"id":(\d+),.*?"text":"t=([0-9.]+)","client_msg_id":"b(\d+)-(\d+)"')
DASH_SEQ = re.compile(r'"seq":(\d+),"interval":')


class ChatMember:
    def __init__(self) -> None:
        self.ended = False
        self.expect: int | None = None
        self.received = 0
        self.order_errors = 0  # a message id not above the previous one, or a sender's n out of turn
        self.skipped = 0  # a sender's messages jumped over (seen later, or never)
        self.resets = 0
        self.last_id = 0
        self.next_n: dict[int, int] = {}
        self.latencies: list[float] = []

    def feed(self, ev: Event, now: float) -> None:
        if ev.event != "message":
            if ev.event == "reset":
                self.resets += 1
            return  # presence, join, leave, typing, created
        m = CHAT_MSG.match(ev.data)
        if m is None:
            return  # not one of ours
        mid, sender, n = int(m[1]), int(m[3]), int(m[4])
        expected_n = self.next_n.get(sender, 0)
        if mid <= self.last_id or n < expected_n:
            self.order_errors += 1
            return
        if n > expected_n:
            self.skipped += n - expected_n
            self.order_errors += 1
        self.next_n[sender] = n + 1
        self.last_id = mid
        self.received += 1
        self.latencies.append(now - float(m[2]))

    def done(self) -> bool:
        return self.expect is not None and self.received >= self.expect

    def summary(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "order_errors": self.order_errors,
            "skipped": self.skipped,
            "resets": self.resets,
            "ended": self.ended,
            "latencies": self.latencies,
        }


class DashViewer:
    def __init__(self) -> None:
        self.ended = False
        self.frames = 0
        self.lost = 0  # frames missing between two received (seq gaps)
        self.order_errors = 0  # a frame older than the one before it
        self.dups = 0  # a frame again (the same seq as the one before it)
        self.snapshots = 0
        self.last_seq: int | None = None

    def feed(self, ev: Event, now: float) -> None:
        if ev.event == "metrics":
            at = ev.data.rfind('"seq":')
            m = DASH_SEQ.match(ev.data, at) if at >= 0 else None
            if m is None:
                self.order_errors += 1
                return
            seq = int(m[1])
            if self.last_seq is not None:
                if seq == self.last_seq:
                    # The snapshot already had it: this viewer connected between the sampler
                    # setting its latest frame and the hub's reader appending that frame to the
                    # topic. Harmless: the page skips a frame whose "t" is not newer than its own.
                    self.dups += 1
                    return
                if seq < self.last_seq:
                    self.order_errors += 1
                    return
                self.lost += seq - self.last_seq - 1
            self.last_seq = seq
            self.frames += 1
        elif ev.event == "snapshot":
            self.snapshots += 1
            m = DASH_SEQ.search(ev.data)
            if m is not None:
                self.last_seq = int(m[1])

    def done(self) -> bool:
        return False

    def summary(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "lost": self.lost,
            "order_errors": self.order_errors,
            "dups": self.dups,
            "snapshots": self.snapshots,
            "last_seq": self.last_seq,
            "ended": self.ended,
        }


class ExecViewer:
    def __init__(self, digest: bool) -> None:
        self.ended = False
        self.bytes = 0
        self.sha = hashlib.sha256() if digest else None
        self.last_offset = 0
        self.order_errors = 0
        self.truncated = 0
        self.resets = 0
        self.exit: dict[str, Any] | None = None
        self.first_at = 0.0
        self.done_at = 0.0

    def feed(self, ev: Event, now: float) -> None:
        event, ident, data = ev.event, ev.id or "", ev.data
        if event in ("stdout", "stderr", "exit"):
            offset = int(ident[1:]) if ident.startswith("o") else -1
            if offset <= self.last_offset:
                self.order_errors += 1
            self.last_offset = max(self.last_offset, offset)
        if event == "stdout":
            obj = json.loads(data)
            chunk = obj["text"].encode() if "text" in obj else base64.b64decode(obj["b64"])
            if not self.bytes:
                self.first_at = now
            self.bytes += len(chunk)
            if self.sha is not None:
                self.sha.update(chunk)
        elif event == "exit":
            self.exit = json.loads(data)
            self.done_at = now
        elif event == "truncated":
            self.truncated += 1
        elif event == "reset":
            self.resets += 1

    def done(self) -> bool:
        return self.exit is not None

    def summary(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "sha256": self.sha.hexdigest() if self.sha is not None else None,
            "order_errors": self.order_errors,
            "truncated": self.truncated,
            "resets": self.resets,
            "exit": self.exit,
            "first_at": self.first_at,
            "done_at": self.done_at,
            "ended": self.ended,
        }


# -- worker processes -----------------------------------------------------------------------------


async def _connect(kind: str, index: int, port: int, params: dict[str, Any]) -> SseClient:
    consumer: Consumer
    headers: dict[str, str] = {}
    if kind == "chat":
        # Join like a person does (POST /chat/session), then open the room with the cookie.
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            body = json.dumps({"name": f"m{index:05d}"}).encode()
            status, head, _ = await http(reader, writer, "POST", "/chat/session", body)
        finally:
            writer.close()
        cookie = re.search(rb"(?i)\r\nset-cookie: (chat_session=[^;\r\n]+)", head)
        if status != 200 or cookie is None:
            raise ConnectionError(f"join: {status}")
        headers = {"Cookie": cookie.group(1).decode()}
        path, consumer = f"/chat/rooms/{params['room']}/events", ChatMember()
    elif kind == "dashboard":
        path, consumer = "/dashboard/events", DashViewer()
    else:
        headers = {"Authorization": f"Bearer {params['token']}"}
        path = f"/exec/runs/{params['run']}/events"
        # The first ``digests`` viewers of each worker process hash what they decode.
        consumer = ExecViewer(digest=index - params["first"] < params.get("digests", 1))
    return await open_stream(path, port, headers, consumer)


def app_worker(conn: Connection, kind: str, port: int, first: int, count: int, params: dict[str, Any]) -> None:
    """A worker process: open ``count`` connections, read them all; obey the parent's commands.

    Commands: ``{"report": true}`` (counters now), ``{"wait": deadline, "expect": n}`` (until
    every connection is done, or the deadline), ``{"close": true}`` (close all, final report).
    """
    raise_nofile()
    run_loop(_app_worker(conn, kind, port, first, count, params))


async def _app_worker(conn: Connection, kind: str, port: int, first: int, count: int, params: dict[str, Any]) -> None:
    t0 = time.process_time()
    began = time.monotonic()
    opened: list[SseClient] = []
    connect_errors: Counter[str] = Counter()
    for start in range(0, count, 50):
        batch = await asyncio.gather(
            *(
                _connect(kind, first + start + i, port, {**params, "first": first})
                for i in range(min(50, count - start))
            ),
            return_exceptions=True,
        )
        for item in batch:
            if isinstance(item, BaseException):
                connect_errors[str(item)[:60] or type(item).__name__] += 1
            else:
                opened.append(item)
    loop = asyncio.get_running_loop()

    def report(with_latencies: bool = False) -> dict[str, Any]:
        conns = [c.consumer.summary() for c in opened]
        latencies: list[float] = []
        for s in conns:
            lat = s.pop("latencies", None)
            if with_latencies and lat:
                latencies.extend(lat)
        return {
            "connections": len(opened),
            "connect_errors": dict(connect_errors),
            "setup_s": setup_s,
            "conns": conns,
            "latencies": latencies,
            "cpu_s": time.process_time() - t0,
            "at": time.time(),
        }

    setup_s = time.monotonic() - began
    conn.send(
        {
            "ready": len(opened),
            "connect_errors": dict(connect_errors),
            "setup_s": setup_s,
            "cpu_s": time.process_time() - t0,
        }
    )
    while True:
        command: dict[str, Any] = await loop.run_in_executor(None, conn.recv)
        if "wait" in command:
            deadline = float(command["wait"])
            for client in opened:
                if isinstance(client.consumer, ChatMember):
                    client.consumer.expect = int(command.get("expect", 0))
            while time.time() < deadline and not all(c.consumer.done() or c.consumer.ended for c in opened):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            conn.send(report(with_latencies=True))
        elif "report" in command:
            conn.send(report())
        else:
            final = report()  # before closing: a closed stream counts as ended
            for client in opened:
                client.close()
            conn.send(final)
            return


class Fleet:
    """``total`` connections of one kind, spread over ``workers`` processes."""

    def __init__(self, kind: str, port: int, total: int, params: dict[str, Any], workers: int = 2) -> None:
        ctx = mp.get_context("fork")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        first = 0
        for w in range(workers):
            share = total // workers + (1 if w < total % workers else 0)
            if share == 0:
                continue
            parent, child = ctx.Pipe()
            p = ctx.Process(target=app_worker, args=(child, kind, port, first, share, dict(params)), daemon=True)
            p.start()
            self.pipes.append(parent)
            self.procs.append(p)
            first += share
        self.ready = self._recv(120)
        self.connected = sum(int(r["ready"]) for r in self.ready)
        self.connect_errors: Counter[str] = Counter()
        for r in self.ready:
            self.connect_errors.update(r["connect_errors"])
        self.setup_s = max(float(r["setup_s"]) for r in self.ready)
        self.setup_cpu_s = sum(float(r["cpu_s"]) for r in self.ready)

    def _recv(self, limit: float) -> list[dict[str, Any]]:
        out = []
        deadline = time.monotonic() + limit
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                self.kill()
                raise RuntimeError("a bench worker did not answer in time")
            out.append(pipe.recv())
        return out

    def ask(self, command: dict[str, Any], limit: float = 60) -> list[dict[str, Any]]:
        for pipe in self.pipes:
            pipe.send(command)
        return self._recv(limit)

    def close(self) -> list[dict[str, Any]]:
        out = self.ask({"close": True}, 30)
        for p in self.procs:
            p.join(10)
        self.kill()
        return out

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(5)


def conns_of(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for r in reports for c in r["conns"]]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


# -- chat -----------------------------------------------------------------------------------------


def chat_sender(conn: Connection, port: int, senders: int, rate: float, count: int) -> None:
    """``count`` messages at ``rate`` a second, message j from sender j % senders; each sender
    posts on its own keep-alive connection and waits for each answer before its next message."""

    async def main() -> None:
        sessions = []
        for k in range(senders):
            c = await asyncio.open_connection(HOST, port)
            status, head, _ = await http(*c, "POST", "/chat/session", json.dumps({"name": f"s{k:03d}"}).encode())
            cookie = re.search(rb"(?i)\r\nset-cookie: (chat_session=[^;\r\n]+)", head)
            if status != 200 or cookie is None:
                raise RuntimeError(f"sender {k} could not join: {status}")
            sessions.append((c, {"Cookie": cookie.group(1).decode()}))
        conn.send({"ready": senders})
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        statuses: Counter[int] = Counter()
        post_s: list[float] = []
        late: list[float] = []
        began = time.monotonic()

        async def lane(k: int) -> None:
            (reader, writer), headers = sessions[k]
            path = f"/chat/rooms/{ROOM}/messages"
            for n, j in enumerate(range(k, count, senders)):
                target = began + j / rate
                await asyncio.sleep(max(0.0, target - time.monotonic()))
                late.append(max(0.0, time.monotonic() - target))
                for _attempt in range(20):  # a 429 or 503 is retried with the same client_msg_id
                    sent = time.time()
                    body = json.dumps({"text": f"t={sent:.6f}", "client_msg_id": f"b{k}-{n}"}).encode()
                    status, _, _ = await http(reader, writer, "POST", path, body, headers)
                    statuses[status] += 1
                    if status == 201:
                        post_s.append(time.time() - sent)
                        break
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(lane(k) for k in range(senders)))
        conn.send(
            {
                "seconds": time.monotonic() - began,
                "statuses": dict(statuses),
                "post_s": post_s,
                "late_max_s": max(late, default=0.0),
                "cpu_s": time.process_time(),
            }
        )
        for (_, writer), _ in sessions:
            writer.close()

    run_loop(main())


def chat(members: int, rate: float, seconds: float) -> dict[str, Any]:
    """``members`` on one room's stream; ``rate`` messages a second for ``seconds``."""
    load = os.getloadavg()[0]
    count = int(rate * seconds)
    senders = max(1, math.ceil(rate / PER_SENDER_RATE))
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp, app_server("chat", Path(tmp)) as srv:
        join_cpu = srv.cpu_s()
        fleet = Fleet("chat", srv.port, members, {"room": ROOM})
        try:
            # Every join is announced to everybody already in the room: let that settle first.
            settle_s = srv.wait_quiet(30)
            join_cpu = srv.cpu_s() - join_cpu
            ctx = mp.get_context("fork")
            pipe, child = ctx.Pipe()
            sender = ctx.Process(target=chat_sender, args=(child, srv.port, senders, rate, count), daemon=True)
            sender.start()
            if not pipe.poll(30):
                raise RuntimeError("the chat senders did not join")
            pipe.recv()
            ready_cpu = sum(r["cpu_s"] for r in fleet.ask({"report": True}))
            cpu0, t0 = srv.cpu_s(), time.monotonic()
            pipe.send("go")
            if not pipe.poll(seconds + 120):
                raise RuntimeError("the chat senders did not finish")
            sent = pipe.recv()
            sender.join(10)
            reports = fleet.ask({"wait": time.time() + 30, "expect": count}, 60)
            cpu1, t1 = srv.cpu_s(), time.monotonic()
            rss = srv.rss_mib()
        finally:
            fleet.close()
    conns = conns_of(reports)
    lat = [x * 1000 for r in reports for x in r["latencies"]]
    posts = [x * 1000 for x in sent["post_s"]]
    expected = fleet.connected * count
    received = sum(c["received"] for c in conns)
    stored = int(sent["statuses"].get(201, 0))
    return {
        "scenario": "chat",
        "impl": "app",
        "members": fleet.connected,
        "connect_errors": sum(fleet.connect_errors.values()),
        "join_s": round(fleet.setup_s, 2),
        "settle_s": round(settle_s, 2),
        # Joining: POST /chat/session, open the stream, the join announced to everyone already in.
        "join_server_cpu_s": round(join_cpu, 2),
        "join_client_cpu_s": round(ready_cpu, 2),
        "rate": rate,
        "senders": senders,
        "messages": count,
        "stored": stored,
        "refused": sum(v for k, v in sent["statuses"].items() if k != 201),
        "deliveries": received,
        "expected": expected,
        "lost": expected - received,
        "order_errors": sum(c["order_errors"] for c in conns) + sum(c["resets"] for c in conns),
        "p50_ms": round(pct(lat, 50), 2),
        "p99_ms": round(pct(lat, 99), 2),
        "max_ms": round(max(lat, default=0.0), 2),
        "post_p50_ms": round(pct(posts, 50), 2),
        "post_p99_ms": round(pct(posts, 99), 2),
        "send_late_max_ms": round(sent["late_max_s"] * 1000, 1),
        "server_cpu_pct": round((cpu1 - cpu0) / (t1 - t0) * 100, 1),
        "server_rss_mib": rss,
        # While the messages went out and arrived (joining is in join_client_cpu_s).
        "client_cpu_s": round(sum(r["cpu_s"] for r in reports) - ready_cpu + sent["cpu_s"], 2),
        "loadavg": round(load, 2),
    }


# -- dashboard ------------------------------------------------------------------------------------


def _published_seq(srv: AppServer) -> int:
    snap = httpx.get(srv.url + "/dashboard/snapshot", timeout=10).json()
    return int((snap.get("metrics") or {}).get("seq", 0))


def _dash_phase(srv: AppServer, viewers: int, seconds: float) -> dict[str, Any]:
    load = os.getloadavg()[0]
    connect_cpu = srv.cpu_s()
    fleet = Fleet("dashboard", srv.port, viewers, {}) if viewers else None
    try:
        before: list[dict[str, Any]] = []
        if fleet is not None:
            # Measure from when every viewer has its prelude (snapshot + 5 minutes of history).
            deadline = time.monotonic() + 60
            while True:
                before = fleet.ask({"report": True})
                if all(c["snapshots"] for c in conns_of(before)):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("dashboard viewers did not all get their snapshot")
                time.sleep(0.1)
        connect_cpu = srv.cpu_s() - connect_cpu
        seq0, cpu0, t0 = _published_seq(srv), srv.cpu_s(), time.monotonic()
        time.sleep(seconds)
        seq1, cpu1, t1 = _published_seq(srv), srv.cpu_s(), time.monotonic()
        rss = srv.rss_mib()
        # Every viewer must get to frame seq1 too: a gap shows only once a later frame arrives.
        after, behind = [], 0
        deadline = time.monotonic() + 10
        while fleet is not None:
            after = fleet.ask({"report": True})
            behind = sum(max(0, seq1 - (c["last_seq"] or 0)) for c in conns_of(after))
            if not behind or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        final = fleet.close() if fleet else []
    in_window = [b["frames"] - a["frames"] for a, b in zip(conns_of(before), conns_of(after), strict=True)]
    conns = conns_of(final)
    return {
        "scenario": "dashboard",
        "impl": "app",
        "viewers": fleet.connected if fleet else 0,
        "connect_errors": sum(fleet.connect_errors.values()) if fleet else 0,
        "seconds": round(t1 - t0, 2),
        "frames_published": seq1 - seq0,
        "frames_min": min(in_window, default=0),
        "frames_max": max(in_window, default=0),
        "lost": sum(c["lost"] for c in conns) + behind,
        "order_errors": sum(c["order_errors"] for c in conns),
        # Shown, not a failure: the snapshot's frame again, which the page skips (DashViewer.feed).
        "dup_frames": sum(c["dups"] for c in conns),
        "ended": sum(1 for c in conns if c["ended"]) if fleet else 0,
        "server_cpu_pct": round((cpu1 - cpu0) / (t1 - t0) * 100, 1),
        "connect_cpu_s": round(connect_cpu, 2),
        "server_rss_mib": rss,
        "client_cpu_s": round(sum(r["cpu_s"] for r in final), 2),
        "loadavg": round(load, 2),
    }


def dashboard(viewers: int, seconds: float) -> list[dict[str, Any]]:
    """Server CPU with 0, 1 and ``viewers`` viewers at the default interval (1 s)."""
    token = "bench-dashboard-token-0123456789"
    with (
        tempfile.TemporaryDirectory(prefix="bench-dash-") as tmp,
        app_server("dashboard", Path(tmp), token=token) as srv,
    ):
        time.sleep(0.5)
        return [_dash_phase(srv, n, seconds) for n in (0, 1, viewers)]


# -- exec -----------------------------------------------------------------------------------------

# The run's output: numbered lines, so a lost, doubled or reordered chunk changes the digest.
GENERATOR = """
def chunks(total):
    line = " the quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ\\n"
    n = 0
    left = total
    while left > 0:
        block = "".join(f"{i:010d}{line}" for i in range(n, n + 1000)).encode()
        n += 1000
        yield block[:left]
        left -= len(block)
"""


def _generate(size: int) -> Iterator[bytes]:
    scope: dict[str, Any] = {}
    exec(GENERATOR, scope)  # our own constant: the very code the run executes
    gen: Callable[[int], Iterator[bytes]] = scope["chunks"]
    return gen(size)


def _exec_policy(root: Path, size: int) -> str:
    q = json.dumps  # a JSON string is a valid TOML basic string
    return f"""
[commands]
allow = [{q(sys.executable)}]
shell = false

[cwd]
allow = [{q(str(root))}]
default = {q(str(root))}

[env]
pass = ["PATH", "HOME", "LANG", "LC_*"]
request = []

[runs]
max_concurrent = 2
default_timeout_s = 600
max_timeout_s = 600
# The bench prints {size} bytes: the cap is raised above it (logged input counts too).
max_output_bytes = {size + MIB}
kill_grace_s = 1

[limits]
cpu_seconds = 0
memory_bytes = 0
open_files = 256
"""


def exec_stream(viewers: int, size: int, limit: float = 300) -> dict[str, Any]:
    """A run printing ``size`` bytes (once told to start), watched live by ``viewers``."""
    load = os.getloadavg()[0]
    digest = hashlib.sha256()
    for chunk in _generate(size):
        digest.update(chunk)
    expected_sha = digest.hexdigest()
    token = "bench-exec-operator-token-0123456789"
    script = (
        GENERATOR
        + f"import sys\nsys.stdin.readline()\nw = sys.stdout.buffer.write\nfor c in chunks({size}):\n    w(c)\n"
    )
    with tempfile.TemporaryDirectory(prefix="bench-exec-") as tmp:
        root = Path(tmp)
        (root / "policy.toml").write_text(_exec_policy(root, size))
        with app_server("exec", root, ["--policy", str(root / "policy.toml")], token=token) as srv:
            api = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            r = api.post("/exec/runs", json={"argv": [sys.executable, "-c", script], "timeout_s": 600})
            r.raise_for_status()
            run_id = r.json()["id"]
            r = api.post("/exec/tokens", json={"run_id": run_id, "ttl_s": 3600, "label": "bench"})
            r.raise_for_status()
            fleet = Fleet("exec", srv.port, viewers, {"run": run_id, "token": r.json()["token"], "digests": 1})
            try:
                deadline = time.monotonic() + 30
                while api.get(f"/exec/runs/{run_id}").json()["viewers"] < fleet.connected:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the exec viewers did not all register")
                    time.sleep(0.05)
                cpu0, t0 = srv.cpu_s(), time.time()
                api.post(f"/exec/runs/{run_id}/input", json={"data": "go\n"}).raise_for_status()
                reports = fleet.ask({"wait": t0 + limit}, limit + 30)
                cpu1, t1 = srv.cpu_s(), time.time()
                rss = srv.rss_mib()
                run = api.get(f"/exec/runs/{run_id}").json()
            finally:
                fleet.close()
                api.close()
    conns = conns_of(reports)
    done = [c for c in conns if c["exit"] is not None]
    per_viewer = [c["bytes"] / MIB / max(1e-9, c["done_at"] - t0) for c in done]
    last = max((c["done_at"] for c in done), default=t1)
    digests = [c["sha256"] for c in conns if c["sha256"] is not None]
    return {
        "scenario": "exec",
        "impl": "app",
        "viewers": fleet.connected,
        "connect_errors": sum(fleet.connect_errors.values()),
        "mib": round(size / MIB, 1),
        "run_status": run["status"],
        "exact_bytes": sum(1 for c in conns if c["bytes"] == size),
        "digests_ok": f"{sum(1 for d in digests if d == expected_sha)}/{len(digests)}",
        "lost": sum(max(0, size - c["bytes"]) for c in conns) + sum(1 for c in conns if c["exit"] is None),
        "order_errors": sum(c["order_errors"] + c["resets"] + c["truncated"] for c in conns)
        + sum(1 for d in digests if d != expected_sha)
        + sum(1 for c in conns if c["bytes"] > size),
        "first_byte_ms": round(min((c["first_at"] - t0 for c in conns if c["first_at"]), default=0) * 1000, 1),
        "mib_s_min": round(min(per_viewer, default=0.0), 1),
        "mib_s_median": round(statistics.median(per_viewer), 1) if per_viewer else 0.0,
        "mib_s_total": round(sum(c["bytes"] for c in conns) / MIB / max(1e-9, last - t0), 1),
        "seconds": round(last - t0, 2),
        "server_cpu_s": round(cpu1 - cpu0, 2),
        "server_rss_mib": rss,
        "client_cpu_s": round(sum(r["cpu_s"] for r in reports), 2),
        "loadavg": round(load, 2),
    }


# -- the plan, the tables, the verdict --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    chat: tuple[int, float, float]  # members, messages/s, seconds
    dashboard: tuple[int, float]  # viewers, seconds per phase
    exec: tuple[int, int]  # viewers, bytes


FULL = Plan(chat=(1_000, 50.0, 10.0), dashboard=(1_000, 10.0), exec=(10, 100 * MIB))
QUICK = Plan(chat=(50, 20.0, 2.0), dashboard=(50, 3.0), exec=(2, 5 * MIB))


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['scenario']}: ERROR {r['error']}"
    if r["scenario"] == "chat":
        return (
            f"chat  {r['members']} members {r['rate']}/s: p50={r['p50_ms']}ms p99={r['p99_ms']}ms "
            f"lost={r['lost']} order_errors={r['order_errors']}"
        )
    if r["scenario"] == "dashboard":
        return (
            f"dashboard {r['viewers']:>5} viewers: server {r['server_cpu_pct']}% CPU, "
            f"{r['frames_min']}-{r['frames_max']} frames/viewer lost={r['lost']}"
        )
    return (
        f"exec  {r['mib']} MiB to {r['viewers']} viewers: {r['mib_s_median']} MiB/s per viewer, "
        f"{r['mib_s_total']} MiB/s total, digests {r['digests_ok']} lost={r['lost']}"
    )


def run(quick: bool) -> list[dict[str, Any]]:
    """Every app scenario once; one that cannot run gives a row with ``error`` (a failure)."""
    plan = QUICK if quick else FULL
    scenarios: list[tuple[str, Callable[[], list[dict[str, Any]]]]] = [
        ("chat", lambda: [chat(*plan.chat)]),
        ("dashboard", lambda: dashboard(*plan.dashboard)),
        ("exec", lambda: [exec_stream(*plan.exec)]),
    ]
    rows: list[dict[str, Any]] = []
    for name, scenario in scenarios:
        try:
            got = scenario()
        except Exception as exc:  # the other scenarios and the results file still count
            got = [{"scenario": name, "impl": "app", "error": f"{type(exc).__name__}: {exc}"[:2000]}]
        for r in got:
            rows.append(r)
            print(_line(r), flush=True)
    return rows


TABLES = {
    "chat": [
        "members",
        "rate",
        "messages",
        "deliveries",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "post_p99_ms",
        "lost",
        "order_errors",
        "refused",
        "join_s",
        "server_cpu_pct",
        "server_rss_mib",
        "client_cpu_s",
        "loadavg",
    ],
    "dashboard": [
        "viewers",
        "seconds",
        "server_cpu_pct",
        "connect_cpu_s",
        "frames_published",
        "frames_min",
        "frames_max",
        "lost",
        "order_errors",
        "dup_frames",
        "ended",
        "server_rss_mib",
        "client_cpu_s",
        "loadavg",
    ],
    "exec": [
        "viewers",
        "mib",
        "mib_s_min",
        "mib_s_median",
        "mib_s_total",
        "seconds",
        "exact_bytes",
        "digests_ok",
        "lost",
        "order_errors",
        "first_byte_ms",
        "server_cpu_s",
        "server_rss_mib",
        "client_cpu_s",
        "loadavg",
    ],
}


def tables(rows: list[dict[str, Any]], table: Callable[[list[dict[str, Any]], list[str]], str]) -> str:
    parts = []
    for scenario, keys in TABLES.items():
        mine = [r for r in rows if r["scenario"] == scenario and "error" not in r]
        errors = [_line(r) for r in rows if r["scenario"] == scenario and "error" in r]
        if mine or errors:
            parts.append("\n".join([f"{scenario}:", *([table(mine, keys)] if mine else []), *errors]))
    return "\n\n".join(parts)


def failures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs that lost, doubled or reordered anything, or could not even connect everyone."""
    return [
        r
        for r in rows
        if "error" in r
        or r.get("run_status", "exited") != "exited"
        or r.get("lost")
        or r.get("order_errors")
        or r.get("connect_errors")
        or r.get("ended")
        or r.get("refused")
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve_main(sys.argv[2:])
    else:
        print("usage: python -m bench.apps serve {chat,dashboard,exec} --port N --data-dir DIR", file=sys.stderr)
        raise SystemExit(2)
