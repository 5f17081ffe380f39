"""One topic's inner response bytes to ``m`` frames, each event parsed once for all topics.

A thousand topics of one stream receive the same events: the hub encodes each event once and
hands every subscriber the same bytes, or, to one that fell behind, many of them joined. Decoding
each topic's chunks with the WHATWG parser and JSON-encoding every event's data again per topic
made fan-out through the mux six times slower than plain streams in the bench (53,000 against
336,000 deliveries/s, 1,000 streams). Here a chunk is cut at its blank lines (C speed) and each
event block is parsed once per (block, id in force before it): the frame's tail after the key is
kept, and each topic only prepends its own key.

That needs the parser to be between events (the previous chunk ended with a blank line) and no
CR in the chunk (CR and CRLF are line ends too); that is how every producer in this project
writes. Anything else goes through the topic's own :class:`shared.decoder.Decoder`, so odd
streams are still decoded to the letter.
"""

from __future__ import annotations

from ..decoder import Decoder
from ..encoding import compact_json

__all__ = ["BlockCache", "Relay"]

# A longer chunk (a replay to one subscriber) is not kept whole; its blocks still are.
_CHUNK_MAX = 256 * 1024


def _tail(event: str, id: str | None, data: str) -> bytes:
    # '{"k":<key>' + this = the frame: compact_json({"k": k, "e": ..., "id": ..., "d": ...}).
    return b"," + compact_json({"e": event, "id": id, "d": data})[1:].encode() + b"\n\n"


class BlockCache:
    """Event blocks parsed lately: (block, id in force before it) -> (frame tail or None for a
    block that dispatches nothing, id in force after it). One per mux; cleared when full (by
    then every topic has moved past those events)."""

    def __init__(self, size: int = 8192, chunks: int = 256) -> None:
        self.size = size
        self._parsed: dict[tuple[bytes, str | None], tuple[bytes | None, str | None]] = {}
        # And whole chunks by identity: subscribers at one cursor get the very same object, so
        # the second topic on costs one lookup. (The entry keeps the chunk, so its id is not
        # reused while the entry lives.)
        self.chunks = chunks
        self._chunks: dict[int, tuple[bytes, str | None, str | None, list[bytes]]] = {}
        self.hits = self.misses = 0

    def tails(self, chunk: bytes, last_id: str | None) -> tuple[str | None, list[bytes]]:
        """(the id in force after ``chunk``, its events' frame tails); ``chunk`` holds whole
        blocks (ends with a blank line, no CR) read from ``last_id``."""
        known = self._chunks.get(id(chunk))
        if known is not None and known[0] is chunk and known[1] == last_id:
            self.hits += len(known[3])
            return known[2], known[3]
        last_in = last_id
        parsed = self._parsed
        tails: list[bytes] = []
        for block in chunk.split(b"\n\n")[:-1]:
            key = (block, last_id)
            entry = parsed.get(key)
            if entry is None:
                self.misses += 1
                decoder = Decoder(last_id, mid_stream=True)
                events = decoder.feed(block + b"\n\n")  # one block: at most one event
                entry = (
                    _tail(events[0].event, events[0].id, events[0].data) if events else None,
                    decoder.last_event_id,
                )
                if len(parsed) >= self.size:
                    parsed.clear()
                parsed[key] = entry
            else:
                self.hits += 1
            tail, last_id = entry
            if tail is not None:
                tails.append(tail)
        if len(chunk) <= _CHUNK_MAX:
            if len(self._chunks) >= self.chunks:
                self._chunks.clear()
            self._chunks[id(chunk)] = (chunk, last_in, last_id, tails)
        return last_id, tails


class Relay:
    """The frames of one topic (key ``k``); starts at ``last_event_id`` like a reconnecting
    EventSource (an id-less event carries the id in force, as ``MessageEvent.lastEventId``)."""

    __slots__ = ("_cache", "_clean", "_decoder", "_head", "last_id")

    def __init__(self, k: str, last_event_id: str | None, cache: BlockCache) -> None:
        self._head = b'event: m\ndata: {"k":' + compact_json(k).encode()
        self._cache = cache
        self.last_id = last_event_id
        self._decoder: Decoder | None = Decoder(last_event_id)
        self._clean = False  # the first chunk may start with a BOM: the parser's own path

    def frames(self, chunk: bytes) -> bytes:
        """The ``m`` frames of the events ``chunk`` completes (comments and retry dropped)."""
        if self._clean and chunk.endswith(b"\n\n") and b"\r" not in chunk:
            self.last_id, tails = self._cache.tails(chunk, self.last_id)
        else:
            decoder = self._decoder
            if decoder is None:
                decoder = self._decoder = Decoder(self.last_id, mid_stream=True)
            tails = [_tail(e.event, e.id, e.data) for e in decoder.feed(chunk)]
            self.last_id = decoder.last_event_id
            # Between events again: the next chunks may take the shared path.
            if decoder.between_events:
                self._clean, self._decoder = True, None
        if not tails:
            return b""
        head = self._head
        return head + head.join(tails)  # head, tail, head, tail...: one join
