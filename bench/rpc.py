"""Correlation load: SSE-request → POST-answer round trips against the ``/bidi/`` demo.

Responder processes hold ``clients`` session streams and answer every ``request`` at once by POST
on a keep-alive connection; a trigger process keeps ``concurrency`` triggers in flight (or paces
them) for a bounded time and records each round trip. Raw asyncio sockets on uvloop keep the clients
cheap; both report their CPU time.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from multiprocessing.connection import Connection
from typing import Any

from bench.load import run_loop
from bench.wire import ChunkedEvents


class HttpConn:
    """One keep-alive HTTP/1.1 connection for small JSON POSTs."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        try:
            return await self._post(path, body, headers)
        except (asyncio.IncompleteReadError, ConnectionError):
            # uvicorn closes keep-alive connections idle for 5 s; such a request was never read.
            if self.writer is not None:
                self.writer.close()
            self.reader = self.writer = None
            return await self._post(path, body, headers)

    async def _post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        return status, await self.reader.readexactly(length)


async def _responder(host: str, port: int, client_id: str, stop: asyncio.Event, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    writer.write(f"GET /bidi/events?client_id={client_id} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    poster = HttpConn(host, port)
    token = None
    events = ChunkedEvents()
    try:
        while not stop.is_set():
            data = await reader.read(1 << 16)
            if not data:
                return
            for ev in events.feed(data):
                if ev.event == "session":
                    token = json.loads(ev.data)["token"]
                    counts[1] += 1
                elif ev.event == "request" and token is not None:
                    rid = json.loads(ev.data)["id"]
                    body = b'{"jsonrpc":"2.0","id":"%s","result":{"ok":true}}' % rid.encode()
                    status, _ = await poster.post("/bidi/respond", body, {"Authorization": f"Bearer {token}"})
                    counts[0] += status == 200
    finally:
        writer.close()
        if poster.writer is not None:
            poster.writer.close()


def responder_worker(conn: Connection, port: int, client_ids: list[str]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        counts = [0, 0]  # answers posted, sessions opened
        tasks = [asyncio.create_task(_responder("127.0.0.1", port, cid, stop, counts)) for cid in client_ids]
        deadline = time.monotonic() + 20
        while counts[1] < len(client_ids) and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(0.05)
        conn.send({"sessions": counts[1]})
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.send({"answered": counts[0], "cpu_s": time.process_time()})

    run_loop(main())


def trigger_worker(
    conn: Connection, port: int, client_ids: list[str], concurrency: int, seconds: float, rate: float | None
) -> None:
    """Fire triggers for ``seconds``: ``concurrency`` in flight, or paced at ``rate`` per second."""

    async def one(http: HttpConn, i: int, rtts: list[float], errors: list[int]) -> None:
        body = json.dumps({"client_id": client_ids[i % len(client_ids)], "method": "bench", "timeout_s": 10}).encode()
        began = time.perf_counter()
        status, _ = await http.post("/bidi/trigger", body)
        if status == 200:
            rtts.append(time.perf_counter() - began)
        else:
            errors.append(status)

    async def main() -> dict[str, Any]:
        rtts: list[float] = []
        errors: list[int] = []
        began = time.monotonic()
        end = began + seconds
        if rate is None:

            async def lane(k: int) -> None:
                http = HttpConn("127.0.0.1", port)
                i = k
                while time.monotonic() < end:
                    await one(http, i, rtts, errors)
                    i += concurrency

            await asyncio.gather(*(lane(k) for k in range(concurrency)))
        else:
            pool = [HttpConn("127.0.0.1", port) for _ in range(concurrency)]
            free = list(pool)
            tasks = []
            n = 0
            while time.monotonic() < end:
                target = began + n / rate
                await asyncio.sleep(max(0.0, target - time.monotonic()))
                if not free:
                    errors.append(0)  # would have needed more connections: counted as a miss
                    n += 1
                    continue
                http = free.pop()

                async def run(h: HttpConn = http, i: int = n) -> None:
                    try:
                        await one(h, i, rtts, errors)
                    finally:
                        free.append(h)

                tasks.append(asyncio.create_task(run()))
                n += 1
            await asyncio.gather(*tasks)
        return {"rtts": rtts, "errors": errors, "seconds": time.monotonic() - began, "cpu_s": time.process_time()}

    result: list[dict[str, Any]] = []

    async def run() -> None:
        result.append(await main())

    run_loop(run())
    conn.send(result[0])
