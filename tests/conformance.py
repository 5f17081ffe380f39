"""Raw event-stream cases, and a server that sends each one byte for byte.

Used by ``test_conformance.py``: the same bytes go to Chromium's EventSource, to our client and
to our decoder, and all must dispatch the same events. A case's first request gets its bytes (in
the given chunks, each flushed on its own) and the connection closes; any later request for it is
recorded (its ``Last-Event-ID`` and when it came) and answered 204, which stops an EventSource
for good, so every case ends by itself.
"""

from __future__ import annotations

import itertools
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field

from shared.encoding import encode


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    content_type: str = "text/event-stream"
    cuts: tuple[int, ...] = ()  # byte offsets where the body is sent as a separate chunk
    per_byte: bool = False  # send every byte as its own chunk

    def chunks(self) -> list[bytes]:
        if self.per_byte:
            return [self.body[i : i + 1] for i in range(len(self.body))]
        points = [0, *self.cuts, len(self.body)]
        return [self.body[a:b] for a, b in itertools.pairwise(points) if b > a]


def _c(name: str, body: bytes | str, **kw: object) -> Case:
    return Case(name, body.encode() if isinstance(body, str) else body, **kw)  # type: ignore[arg-type]


CASES: list[Case] = [
    _c("simple", "data: hi\n\n"),
    _c("two-data-lines", "data: a\ndata: b\n\n"),
    _c("no-space", "data:hi\n\n"),
    _c("two-spaces", "data:  hi\n\n"),
    _c("colon-in-value", "data: a:b: c\n\n"),
    _c("crlf", "data: a\r\ndata: b\r\n\r\n"),
    _c("cr", "data: a\rdata: b\r\r"),
    _c("mixed-breaks", "data: a\r\ndata: b\rdata: c\n\ndata: d\r\r\n"),
    _c("crlf-split", "data: a\r\n\r\ndata: b\r\n\r\n", cuts=(8,)),
    _c("cr-then-cr-split", "data: a\r\rdata: b\n\n", cuts=(8,)),
    _c("bom", b"\xef\xbb\xbfdata: first\n\ndata: second\n\n"),
    _c("bom-split", b"\xef\xbb\xbfdata: first\n\n", cuts=(1, 2)),
    _c("two-boms", b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n"),
    _c("bom-not-first", b"data: x\n\n\xef\xbb\xbfdata: y\n\n"),
    _c("empty-data-colon", "data:\n\n"),
    _c("empty-data-space", "data: \n\n"),
    _c("empty-data-bare", "data\n\n"),
    _c("our-encode-empty", encode("")),
    _c("trailing-empty-line", "data: a\ndata:\n\n"),
    _c("event-without-data", "event: foo\n\nevent: foo\ndata: x\n\n"),
    _c("named-event", "event: foo\ndata: x\n\n"),
    _c("empty-event-name", "event:\ndata: x\n\n"),
    _c("bare-event-field", "event\ndata: x\n\n"),
    _c("event-name-space", "event:  foo\ndata: x\n\n"),
    _c("event-resets-per-block", "event: foo\ndata: x\n\ndata: y\n\n"),
    _c("comments-only", ": hello\n:\n: world\n\n"),
    _c("comment-between", "data: a\n: note\ndata: b\n\n"),
    _c("unknown-field", "foo: bar\ndata: x\n\n"),
    _c("leading-space-field", " data: x\n\ndata: y\n\n"),
    _c("no-blank-at-eof", "data: a\n\ndata: b"),
    _c("no-blank-at-eof-lf", "data: a\n\ndata: b\n"),
    _c("id", "id: 5\ndata: x\n\n"),
    _c("id-after-data", "data: x\nid: 3\n\n"),
    _c("id-kept", "id: 5\ndata: x\n\ndata: y\n\n"),
    _c("id-cleared", "id: 5\ndata: x\n\nid:\ndata: y\n\n"),
    _c("id-cleared-last", "id: 5\ndata: x\n\nid\n\n"),
    _c("id-without-data", "id: 7\n\n"),
    _c("id-with-nul", b"id: 5\ndata: x\n\nid: a\x00b\ndata: y\n\n"),
    _c("id-non-ascii", "id: café\ndata: x\n\n"),
    _c("id-emoji", "id: \U0001f600\ndata: x\n\n"),
    _c("id-spaces", "id:  5 \ndata: x\n\n"),
    _c("retry", "retry: 100\ndata: x\n\n"),
    _c("retry-without-data", "retry: 100\n\n"),
    _c("retry-underscore", "retry: 1_0\ndata: x\n\n"),
    _c("retry-plus", "retry: +100\ndata: x\n\n"),
    _c("retry-fullwidth", "retry: \uff11\uff10\uff10\ndata: x\n\n"),  # full-width 100
    _c("retry-unit", "retry: 100ms\ndata: x\n\n"),
    _c("retry-fraction", "retry: 1.5\ndata: x\n\n"),
    _c("invalid-utf8", b"data: a\xff\xfeb\n\n"),
    _c("utf8-per-byte", "data: é€\U0001f600\n\nid: ü\ndata: z\n\n", per_byte=True),
    _c("crlf-per-byte", "data: a\r\n\r\ndata: b\r\r", per_byte=True),
    _c("nul-in-data", b"data: a\x00b\n\n"),
    _c("long-line", b"data: " + b"x" * 1_000_000 + b"\n\n"),
    _c("many-events", "".join(f"id: {i}\ndata: {i}\n\n" for i in range(200))),
    _c("type-case", "data: x\n\n", content_type="Text/Event-Stream"),
    _c("charset-utf8", "data: x\n\n", content_type="text/event-stream; charset=UTF-8"),
    _c("charset-latin1", "data: caf\xe9\n\n".encode("latin-1"), content_type="text/event-stream; charset=iso-8859-1"),
    _c("not-a-stream", "data: x\n\n", content_type="text/plain"),
]
EVENT_TYPES = ["message", "foo", " foo"]  # every type a case can dispatch, for addEventListener


@dataclass
class Seen:
    """What the server saw of one case: each request's ``Last-Event-ID`` (raw bytes, or None)
    and the time it came; when the first response was closed."""

    requests: list[tuple[float, bytes | None]] = field(default_factory=list)
    closed_at: float | None = None

    def reconnect_delay(self) -> float | None:
        if len(self.requests) < 2 or self.closed_at is None:
            return None
        return self.requests[1][0] - self.closed_at


class CaseServer:
    """A raw HTTP/1.1 server: ``/<who>/case/<name>`` sends a case; ``/page`` an empty HTML page."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], Seen] = {}
        self.cases = {c.name: c for c in CASES}
        self.lock = threading.Lock()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._handle(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CaseServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                return
            head += data
        lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        path = lines[0].split(b" ")[1].decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if path == "/page":
            body = b"<!doctype html><title>conformance</title>"
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n")
            sock.sendall(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            return
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[1] != "case" or parts[2] not in self.cases:
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        case = self.cases[parts[2]]
        with self.lock:
            seen = self.seen.setdefault((parts[0], case.name), Seen())
            seen.requests.append((time.monotonic(), headers.get(b"last-event-id")))
            first = len(seen.requests) == 1
        if not first:
            sock.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            return
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
            % case.content_type.encode()
        )
        chunks = case.chunks()
        for chunk in chunks:
            sock.sendall(chunk)
            if len(chunks) > 1:
                time.sleep(0.002)  # a chunk of its own for the reader, not coalesced with the next
        with self.lock:
            seen.closed_at = time.monotonic()
