"""A run's append-only log: every chunk it printed (and what it was sent), in order, as frames.

A frame is ``kind`` (1 ASCII byte) + payload length (4 bytes, big-endian) + payload. The SSE id of
a frame is ``o<offset>``, the byte offset in the file just *after* the frame, so resuming from an
id is a seek, and ``o0`` means "from the start". Output frames hold raw bytes exactly as read;
the other frames hold JSON.

The log is the only copy: late joiners and reconnecting clients read it from disk at their own
pace, so a slow client costs a file offset, not memory.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from array import array
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.encoding import encode

__all__ = [
    "EVENT_NAMES",
    "KINDS",
    "MERGE_LIMIT",
    "RAW_KINDS",
    "Frame",
    "RunLog",
    "encode_frames",
    "event_data",
    "parse_event_id",
]

_HEADER = struct.Struct(">cI")
MAX_FRAME = 1 << 16  # writers split larger payloads

# kind -> SSE event name
EVENT_NAMES = {
    b"o": "stdout",
    b"e": "stderr",
    b"i": "input",  # bytes sent to a pipe run's stdin (a pty echoes input itself)
    b"z": "input",  # EOF sent
    b"r": "resize",
    b"n": "notice",  # signal sent, terminate requested: who did what, in band
    b"t": "truncated",
    b"x": "exit",
}
KINDS = frozenset(EVENT_NAMES)
RAW_KINDS = frozenset({b"o", b"e", b"i"})
# Consecutive frames of one of these kinds are merged into one event when read back, so a late
# joiner to a chatty pty run gets a few large events rather than thousands of keystroke echoes.
MERGE_LIMIT = 1 << 16


@dataclass(frozen=True, slots=True)
class Frame:
    kind: bytes
    payload: bytes
    end: int  # offset just after this frame: its event id is f"o{end}"

    @property
    def event_id(self) -> str:
        return f"o{self.end}"


def parse_event_id(value: str) -> int | None:
    """The offset in an id of ours, or ``None`` if it is not one."""
    if len(value) < 2 or value[0] != "o" or not value[1:].isdigit() or len(value) > 20:
        return None
    return int(value[1:])


class RunLog:
    """One run's log file. Writable while the run is live, read-only afterwards.

    All calls are synchronous and short (one ``pwrite``/``pread`` per frame, chunks of at most
    64 KiB), so they run on the event loop directly.
    """

    def __init__(
        self, path: Path, *, writable: bool = False, on_append: Callable[[bytes, bytes], None] | None = None
    ) -> None:
        self.path = path
        self.writable = writable
        # Called with (kind, payload) after each append: how a run's log is mirrored to the
        # backend when several instances serve it (see mirror.py).
        self.on_append = on_append
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND if writable else os.O_RDONLY
        self._fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self._fd).st_size
        # Frame end offsets, built as frames are written, or by one scan on first resume.
        self._ends: array[int] | None = array("Q") if writable and self.size == 0 else None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> int:
        """A reader's view of a file another handle appends to: take its current size."""
        if not self.writable:
            size = os.fstat(self._fd).st_size
            if size != self.size:
                self.size = size
                self._ends = None
        return self.size

    # -- writing ----------------------------------------------------------------------------

    def append(self, kind: bytes, payload: bytes) -> int:
        """Append one or more frames (payloads over 64 KiB are split); returns the new end."""
        if kind not in KINDS:
            raise ValueError(f"unknown frame kind {kind!r}")
        if not self.writable:
            raise RuntimeError(f"{self.path.name} is read-only")
        views = [payload[i : i + MAX_FRAME] for i in range(0, len(payload), MAX_FRAME)] or [b""]
        for part in views:
            data = _HEADER.pack(kind, len(part)) + part
            written = os.write(self._fd, data)
            if written != len(data):  # a full disk; the run keeps going, the log stops here
                raise OSError(f"short write to {self.path.name}: {written} of {len(data)} bytes")
            self.size += len(data)
            if self._ends is not None:
                self._ends.append(self.size)
        if self.on_append is not None:
            self.on_append(kind, payload)
        return self.size

    def append_json(self, kind: bytes, obj: Any) -> int:
        return self.append(kind, json.dumps(obj, separators=(",", ":")).encode())

    # -- reading ----------------------------------------------------------------------------

    def read(self, pos: int, max_bytes: int = 1 << 18) -> list[Frame]:
        """Whole frames from ``pos`` (a frame boundary), about ``max_bytes`` of them at most."""
        out: list[Frame] = []
        total = 0
        size = self.size
        while pos < size and total < max_bytes:
            header = os.pread(self._fd, _HEADER.size, pos)
            if len(header) < _HEADER.size:
                break
            kind, length = _HEADER.unpack(header)
            if pos + _HEADER.size + length > size:
                break  # a torn frame at the end (a crash mid-write); recover() cuts it off
            payload = os.pread(self._fd, length, pos + _HEADER.size) if length else b""
            pos += _HEADER.size + length
            out.append(Frame(kind, payload, pos))
            total += length + _HEADER.size
        return out

    def is_boundary(self, pos: int) -> bool:
        """Whether an event id's offset is where a frame ends (or the start)."""
        if pos == 0:
            return True
        if pos > self.size:
            return False
        if self._ends is None:
            self._ends = self._scan()
        i = bisect_left(self._ends, pos)
        return i < len(self._ends) and self._ends[i] == pos

    def _scan(self) -> array[int]:
        ends: array[int] = array("Q")
        pos = 0
        while pos < self.size:
            header = os.pread(self._fd, _HEADER.size, pos)
            if len(header) < _HEADER.size:
                break
            _, length = _HEADER.unpack(header)
            if pos + _HEADER.size + length > self.size:
                break
            pos += _HEADER.size + length
            ends.append(pos)
        return ends

    def ends_with_exit(self) -> bool:
        ends = self._scan() if self._ends is None else self._ends
        if not ends:
            return False
        start = ends[-2] if len(ends) > 1 else 0
        return os.pread(self._fd, 1, start) == b"x"

    @classmethod
    def recover(cls, path: Path) -> RunLog:
        """Open a log left by a crashed server for appending, cutting off a torn last frame."""
        path.touch(mode=0o600, exist_ok=True)
        with cls(path) as reader:
            ends = reader._scan()
            good = ends[-1] if ends else 0
        if good != path.stat().st_size:
            os.truncate(path, good)
        return cls(path, writable=True)


def chunk_data(payload: bytes) -> dict[str, str]:
    """Lossless JSON for a chunk: ``text`` when it is valid UTF-8, ``b64`` otherwise."""
    try:
        return {"text": payload.decode("utf-8")}
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(payload).decode("ascii")}


def event_data(kind: bytes, payload: bytes) -> str:
    """The SSE data of a frame (or of merged output frames) of ``kind``."""
    if kind in RAW_KINDS:
        return json.dumps(chunk_data(payload), separators=(",", ":"), ensure_ascii=False)
    if kind == b"z":
        return '{"eof":true}'
    return payload.decode("utf-8", "replace")


def encode_frames(frames: list[Frame]) -> bytes:
    """SSE events for ``frames``; runs of same-kind output frames become one event."""
    out: list[bytes] = []
    i, n = 0, len(frames)
    while i < n:
        f = frames[i]
        if f.kind in RAW_KINDS:
            j, size = i + 1, len(f.payload)
            while j < n and frames[j].kind == f.kind and size + len(frames[j].payload) <= MERGE_LIMIT:
                size += len(frames[j].payload)
                j += 1
            payload = f.payload if j == i + 1 else b"".join(x.payload for x in frames[i:j])
            last = frames[j - 1]
            out.append(encode(event_data(f.kind, payload), event=EVENT_NAMES[f.kind], id=last.event_id))
            i = j
            continue
        out.append(encode(event_data(f.kind, f.payload), event=EVENT_NAMES[f.kind], id=f.event_id))
        i += 1
    return b"".join(out)
