"""Request heads bounded in size and time (``shared.head_protocol.HeadWithBodyProtocol``), issue 14.7.

Without bounds, twenty unfinished 8 MiB heads took a server from 72 to 255 MiB, and slowloris
connections (a header line every few seconds, never the blank line) stayed open for good.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from shared import Hub
from showcase import basics
from tests.rig import LiveServer

HEAD_TIMEOUT = 1.0


@pytest.fixture
def server() -> Iterator[LiveServer]:
    with LiveServer(lambda: basics.create_app(Hub()), config={"head_timeout": HEAD_TIMEOUT}) as srv:
        yield srv


async def _read_all(reader: asyncio.StreamReader, timeout: float) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


async def test_a_head_over_64_kib_gets_431_and_is_closed(server: LiveServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /basics/interval HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Junk: " + b"a" * 70_000 + b"\r\n")
    answer = await _read_all(reader, 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert json.loads(body) == {"status_code": 431, "detail": "the request head is over 64 KiB"}


async def _unfinished_head(port: int, size: int) -> int:
    """Send up to ``size`` bytes of header lines, never the blank line; how many went out before
    the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    line = b"X-Junk: " + b"a" * 8180 + b"\r\n"
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while sent < size:
            writer.write(line)
            await asyncio.wait_for(writer.drain(), 5)
            sent += len(line)
        await _read_all(reader, 5)  # (not reached when the server is right)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
    return sent


async def test_twenty_unfinished_8_mib_heads_are_cut_off(server: LiveServer) -> None:
    sent = await asyncio.gather(*(_unfinished_head(server.port, 8 * 1024 * 1024) for _ in range(20)))
    # Each was cut off near the limit (plus what the kernel's socket buffers took in meanwhile).
    assert max(sent) < 4 * 1024 * 1024, sent


async def test_a_slow_head_gets_408_and_an_idle_connection_is_closed(server: LiveServer) -> None:
    began = time.monotonic()
    slow_r, slow_w = await asyncio.open_connection("127.0.0.1", server.port)
    idle_r, idle_w = await asyncio.open_connection("127.0.0.1", server.port)
    slow_w.write(b"GET /basics/interval HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    answer = await _read_all(slow_r, 5)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"did not arrive within 1 s" in answer
    assert await _read_all(idle_r, 5) == b""  # closed without a word: it never asked anything
    assert time.monotonic() - began < HEAD_TIMEOUT + 2
    slow_w.close()
    idle_w.close()


async def test_300_slowloris_connections_are_all_closed(server: LiveServer) -> None:
    conns = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(300)]
    for _, writer in conns:
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for i in range(3):  # a header line now and then, as slowloris does
        await asyncio.sleep(HEAD_TIMEOUT / 3)
        for _, writer in conns:
            if not writer.is_closing():
                writer.write(f"X-Slow-{i}: 1\r\n".encode())
    answers = await asyncio.gather(*(_read_all(r, 10) for r, _ in conns))
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers)
    for _, writer in conns:
        writer.close()


async def test_what_a_normal_client_does_is_not_affected(server: LiveServer) -> None:
    # A body larger than the head limit, sent with its head in one write: a 413 from the app (its
    # body limit is 16 KiB), not a 431.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = b'{"seconds": 1, "pad": "' + b"p" * 100_000 + b'"}'
    writer.write(
        b"POST /basics/interval HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    first = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
    assert first.startswith(b"HTTP/1.1 413 ")
    writer.close()
    # Keep-alive: two requests on one connection, the second after a pause shorter than the bound.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    request = b"GET /basics/interval HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for _ in range(2):
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        fields = dict(ln.split(b": ", 1) for ln in head.split(b"\r\n")[1:-2])
        length = int(fields[b"content-length"])
        await reader.readexactly(length)
        await asyncio.sleep(HEAD_TIMEOUT / 2)
    writer.close()
    # A stream lasts longer than the head bound: once its head is in, no timer applies.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /basics/events?count=3&interval=0.8 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    got = await asyncio.wait_for(reader.readuntil(b"event: done"), 10)
    assert got.count(b"event: tick") == 3
    writer.close()
