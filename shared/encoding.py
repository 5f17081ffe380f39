"""The SSE wire format, encode side (WHATWG HTML, "Server-sent events", 9.2.5/9.2.6).

Pure functions, no I/O. Everything returns ``bytes`` so that a hub can encode an event once and
hand the very same object to every subscriber.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_ID_BYTES", "Event", "encode", "encode_comment", "encode_json", "validate_event_id"]

MAX_ID_BYTES = 64
# Printable ASCII minus "<" (see validate_event_id for why).
_ID_RE = re.compile(r"^[\x21-\x3b\x3d-\x7e]{1,64}$")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def validate_event_id(value: str) -> str:
    """Return ``value`` if it can be used as an event id, else raise ``ValueError``.

    The spec allows any string without NUL/CR/LF, but the browser echoes it back in a
    ``Last-Event-ID`` request header. Chromium only sends CORS-safelisted header values without a
    preflight when they are short printable ASCII, so we restrict ids to 1-64 bytes of ``!``..``~``
    except ``<``; that also keeps them safe to log and to put in a query string.
    """
    if not _ID_RE.match(value):
        raise ValueError(
            f"invalid SSE event id {value[:80]!r}: use 1-{MAX_ID_BYTES} printable ASCII characters, "
            "no spaces and no '<'"
        )
    return value


def _check_field(name: str, value: str) -> str:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"SSE field {name!r} must not contain CR, LF or NUL: {value[:80]!r}")
    return value


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event. ``data`` is sent as is; use :func:`encode_json` for objects."""

    data: str | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None

    def encode(self) -> bytes:
        return encode(self.data, event=self.event, id=self.id, retry=self.retry, comment=self.comment)


def encode(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """Encode one event block, terminated by the blank line that dispatches it.

    Multi-line ``data`` becomes several ``data:`` lines (CR, LF and CRLF all count as breaks,
    as they do for the parser), so the client sees the text joined by ``\\n``.
    """
    parts: list[str] = []
    if comment is not None:
        parts.extend(f": {line}" if line else ":" for line in _LINE_BREAK.split(comment))
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ValueError(f"SSE retry must be a non-negative int of milliseconds, got {retry!r}")
        parts.append(f"retry: {retry}")
    if id is not None:
        parts.append(f"id: {validate_event_id(id)}")
    if event is not None:
        if not event:
            raise ValueError("SSE event name must not be empty (omit it for 'message')")
        parts.append(f"event: {_check_field('event', event)}")
    if data is not None:
        # NUL is fine in data: the format carries it and EventSource hands it over (a test shows
        # Chromium does); it is only an id that a NUL makes the browser ignore.
        parts.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    if not parts:
        raise ValueError("an SSE event needs at least one of data, event, id, retry or comment")
    try:
        return ("\n".join(parts) + "\n\n").encode()
    except UnicodeEncodeError as exc:
        # A lone surrogate (from a JSON "\ud800" or a bad decode) cannot be UTF-8: say where.
        bad = exc.object[exc.start : exc.end]
        raise ValueError(f"SSE text must be valid Unicode: a lone surrogate {bad!r} cannot be sent as UTF-8") from None


# json.dumps with arguments builds a new encoder per call; this one is made once.
compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode_json(obj: Any, *, event: str | None = None, id: str | None = None, retry: int | None = None) -> bytes:
    """Encode ``obj`` as compact JSON data. JSON never contains raw line breaks, so one line."""
    return encode(compact_json(obj), event=event, id=id, retry=retry)


def encode_comment(text: str = "") -> bytes:
    """A comment block: ignored by clients, used for heartbeats (keeps proxies from timing out)."""
    return encode(comment=text)
