"""The run log: frames, ids that are byte offsets, lossless chunks, and crash recovery."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from remote_exec.runlog import RunLog, encode_frames, parse_event_id
from shared.decoder import Decoder


def test_ids_are_offsets_and_reads_resume_there(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    with RunLog(path, writable=True) as log:
        a = log.append(b"o", b"hello ")
        b = log.append(b"e", b"oops\n")
        c = log.append_json(b"x", {"status": "exited", "code": 0})
        assert (a, b, c) == (11, 21, 21 + 5 + len(b'{"status":"exited","code":0}'))
        assert log.size == path.stat().st_size == c
    with RunLog(path) as reader:
        frames = reader.read(0)
        assert [(f.kind, f.event_id) for f in frames] == [(b"o", "o11"), (b"e", "o21"), (b"x", f"o{c}")]
        assert [f.payload for f in reader.read(a)][:1] == [b"oops\n"]
        assert all(reader.is_boundary(p) for p in (0, a, b, c))
        assert not any(reader.is_boundary(p) for p in (1, 5, a + 1, c + 1))
        assert reader.ends_with_exit()


def test_parse_event_id() -> None:
    assert parse_event_id("o0") == 0
    assert parse_event_id("o12345") == 12345
    for bad in ("", "o", "x12", "o-1", "o1a", "o" + "9" * 30):
        assert parse_event_id(bad) is None


def test_large_payloads_are_split_into_frames(tmp_path: Path) -> None:
    with RunLog(tmp_path / "r.log", writable=True) as log:
        log.append(b"o", b"z" * 200_000)
        frames = log.read(0, 1 << 30)
    assert [len(f.payload) for f in frames] == [65536, 65536, 65536, 200_000 - 3 * 65536]


def test_encoding_is_lossless_and_merges_runs_of_one_kind(tmp_path: Path) -> None:
    raw = bytes(range(256))
    with RunLog(tmp_path / "r.log", writable=True) as log:
        log.append(b"o", "héllo ".encode())
        log.append(b"o", "wörld\n".encode())
        log.append(b"e", raw)
        log.append(b"o", b"\r\n\x00")
        end = log.append_json(b"x", {"status": "exited"})
        events = Decoder().feed(encode_frames(log.read(0)))
    assert [e.event for e in events] == ["stdout", "stderr", "stdout", "exit"]
    assert json.loads(events[0].data) == {"text": "héllo wörld\n"}
    assert events[0].id == "o24"  # the end of the second (merged) frame: 2 x (5 + 7 bytes)
    assert base64.b64decode(json.loads(events[1].data)["b64"]) == raw
    assert json.loads(events[2].data) == {"text": "\r\n\x00"}
    assert events[3].id == f"o{end}"


def test_recover_cuts_a_torn_frame(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    with RunLog(path, writable=True) as log:
        good = log.append(b"o", b"complete")
        log.append(b"o", b"torn frame")
    with path.open("r+b") as f:
        f.truncate(good + 7)  # the crash came mid-write
    with RunLog.recover(path) as log:
        assert log.size == good
        end = log.append_json(b"x", {"status": "lost"})
    with RunLog(path) as reader:
        assert next(f.payload for f in reader.read(0)) == b"complete"
        assert reader.size == end
        assert reader.ends_with_exit()
