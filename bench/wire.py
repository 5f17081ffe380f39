"""The bench's raw clients read a stream as a browser would: HTTP/1.1 chunked framing undone,
then the event stream through ``shared.decoder``. (``bench/load.py`` counts its own compact
events with regexes instead: it must keep up with a million deliveries a second on the same two
cores as the server; ``tests/system/test_bench_wire.py`` checks its counts against this decoder.)"""

from __future__ import annotations

from shared.decoder import Decoder, Event

__all__ = ["ChunkedEvents"]


class ChunkedEvents:
    """HTTP/1.1 chunked framing, then the event stream through ``shared.decoder`` (the parser
    the client and the CLI use, so the bench reads the bytes exactly as a browser would)."""

    def __init__(self) -> None:
        self.raw = bytearray()
        self.decoder = Decoder()
        self.ended = False

    def feed(self, data: bytes) -> list[Event]:
        raw = self.raw
        raw += data
        body = bytearray()
        while True:
            nl = raw.find(b"\r\n")
            if nl < 0:
                break
            size = int(bytes(raw[:nl]).split(b";", 1)[0] or b"0", 16)
            if size == 0:
                self.ended = True
                raw.clear()
                break
            if len(raw) < nl + 2 + size + 2:
                break
            body += raw[nl + 2 : nl + 2 + size]
            del raw[: nl + 2 + size + 2]
        return self.decoder.feed(bytes(body)) if body else []
