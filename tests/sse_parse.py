"""Parse SSE bytes the way a client would, for in-process hub tests."""

from __future__ import annotations

from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder, SSELineDecoder


class Parser:
    def __init__(self) -> None:
        self._lines = SSELineDecoder()
        self._events = SSEDecoder()

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        out = []
        for line in self._lines.decode(chunk.decode()):
            sse = self._events.decode(line)
            # Skip what the spec would not dispatch (a block with no data: comments, retry).
            if sse is not None and not (sse.event == "message" and sse.data == ""):
                out.append(sse)
        return out
