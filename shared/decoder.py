"""The SSE wire format, decode side: the WHATWG parsing algorithm, no I/O.

WHATWG HTML 9.2.6 ("Interpreting an event stream"), with Chromium's EventSource as the oracle
where the text leaves room (``tests/shared/test_conformance.py`` serves every case to Chromium and to
this decoder in the same run and asserts both dispatch the same events). Feed it bytes in chunks
of any size; it hands back the events each chunk completes::

    decoder = Decoder(last_event_id=previous_id)
    for chunk in response.iter_bytes():
        for event in decoder.feed(chunk):
            ...
    decoder.retry  # the reconnection time the stream asked for (ms), or None

The parts that look odd are the spec's:

- The stream is UTF-8, always (the ``charset`` is not consulted); one leading BOM is dropped;
  invalid bytes become U+FFFD.
- A line ends at CRLF, LF or CR. A CR at the end of a chunk may be the first half of a CRLF, so
  the next chunk's leading LF is not a second (empty, dispatching) line.
- ``data:`` with an empty value still appends a line feed to the data buffer, so a block with
  only ``data`` (or ``data:``) dispatches an event whose data is the empty string; a block with
  no ``data`` line at all dispatches nothing, however many ``event:`` or ``id:`` lines it has.
- ``id:`` with a value containing NUL is ignored; an empty ``id:`` clears the last event id.
  The id buffer starts each connection at the previous connection's last id (Chromium passes it
  to the new parser), so an empty ``id:`` clears it and a block without ``id:`` keeps it.
- ``retry:`` is applied only if the value is ASCII digits (no sign, underscore or full-width
  digit: ``str.isdigit`` would take those).
- At the end of the stream, a block not ended by a blank line is discarded.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["Decoder", "Event"]

_BOM = "\ufeff"
_ASCII_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event. ``id`` is the last event id in force (the browser's ``lastEventId``):
    an event without an ``id:`` field carries the id of the one before it; ``None`` when empty.
    ``retry`` is the reconnection time a ``retry:`` field in the same block set, if any."""

    event: str
    data: str
    id: str | None
    retry: int | None = None

    @property
    def is_reset(self) -> bool:
        """The server could not resume from our id: reload state; we resume from here on."""
        return self.event == "reset"

    def json(self) -> Any:
        return json.loads(self.data)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "id": self.id, "data": self.data}


class Decoder:
    """An incremental event-stream parser for one connection (make a new one per connection,
    passing the last event id the previous one ended with)."""

    def __init__(self, last_event_id: str | None = None, *, mid_stream: bool = False) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # The BOM check is for the first character of the stream only (``mid_stream``: a parser
        # taking over a stream between two events, where a BOM is data).
        self._start = not mid_stream
        self._pending = ""  # an unfinished line
        self._after_cr = False  # the last chunk ended in CR: a leading LF belongs to it
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self._id_buffer = last_event_id or ""
        self._block_retry: int | None = None
        #: The last event id dispatched (what a reconnect sends as ``Last-Event-ID``), or None.
        self.last_event_id: str | None = last_event_id or None
        #: The reconnection time (ms) from the latest valid ``retry:`` field, or None.
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """The events dispatched by the lines ``chunk`` completes."""
        text = self._text.decode(chunk)
        if self._start and text:
            self._start = False
            if text.startswith(_BOM):
                text = text[1:]
        if self._after_cr and text:
            self._after_cr = False
            if text[0] == "\n":
                text = text[1:]
        if not text:
            return []
        out: list[Event] = []
        # splitlines() knows more line breaks than the spec (VT, FF, U+2028...); split on the
        # spec's three by hand. Normalising CRLF and CR to LF first keeps it to one split.
        if text[-1] == "\r":
            self._after_cr = True
        text = self._pending + text
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        self._pending = lines.pop()
        for line in lines:
            event = self._line(line)
            if event is not None:
                out.append(event)
        return out

    @property
    def between_events(self) -> bool:
        """Nothing half-read: no partial line, no CR waiting for its LF, no fields of an event
        not yet dispatched (what a chunk ending with a blank line leaves)."""
        return not (self._pending or self._after_cr or self._has_data or self._event)

    def close(self) -> None:
        """The stream ended: a block without its blank line is discarded, as the spec says."""
        self._pending = ""
        self._data, self._has_data, self._event = [], False, ""

    def _line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None  # a comment (heartbeats)
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id_buffer = value
        elif name == "retry" and value and _ASCII_DIGITS.issuperset(value):
            self.retry = self._block_retry = int(value)
        return None  # any other field is ignored

    def _dispatch(self) -> Event | None:
        # The last event id is set by every blank line, even one that dispatches nothing.
        self.last_event_id = self._id_buffer or None
        retry, self._block_retry = self._block_retry, None
        if not self._has_data:
            self._event = ""
            return None
        event = Event(self._event or "message", "\n".join(self._data), self.last_event_id, retry)
        self._data, self._has_data, self._event = [], False, ""
        return event
