"""The bench reads streams right: its raw clients decode with ``shared.decoder`` (as the client and
the CLI do), and the load generator's fast regex counting agrees with that decoder on the same
bytes, cut anywhere (issue 16: no hand-made parser that can drift from the spec)."""

from __future__ import annotations

import json
import random

import pytest

from bench.load import ConnResult, Done, SseStream
from bench.wire import ChunkedEvents
from shared.encoding import encode, encode_json

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"


def stream_body(seqs: list[int]) -> list[bytes]:
    """What our server writes: a retry hint, then one write per event (some joined), a heartbeat."""
    writes = [encode(retry=3000)]
    for i, seq in enumerate(seqs):
        ev = encode_json({"seq": seq, "t": 1700000000.0 + seq}, event="tick", id=f"e-{seq}")
        if i % 3 == 1:
            writes[-1] += ev  # several events in one chunk, as a fan-out round writes them
        else:
            writes.append(ev)
        if i == 5:
            writes.append(b": heartbeat\n\n")
    return writes


def cuts(data: bytes, rng: random.Random) -> list[bytes]:
    points = sorted(rng.sample(range(1, len(data)), min(40, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("gap", [False, True])
async def test_the_load_client_counts_what_the_decoder_decodes(strict: bool, gap: bool) -> None:
    seqs = list(range(1, 31))
    if gap:
        seqs.remove(17)  # a lost event: both must see it
    body = chunked(*stream_body(seqs))
    raw = HEAD + body
    for seed in range(20):
        rng = random.Random(seed)
        res, done = ConnResult(), Done()
        conn = SseStream(b"", res, want=10_000, keep_latency=False, strict=strict, done=done)
        decoder = ChunkedEvents()
        for piece in cuts(raw, rng):
            conn.data_received(piece)
        decoded = [e for piece in cuts(body, rng) for e in decoder.feed(piece)]  # the body: the head is HTTP's
        got = [json.loads(e.data)["seq"] for e in decoded if e.event == "tick"]
        assert got == seqs
        assert decoder.ended
        assert res.received == len(got)
        assert (res.first_seq, res.last_seq) == (got[0], got[-1])
        assert res.last_id == decoded[-1].id
        assert (res.errors > 0) == gap
        assert res.ended_early  # the terminating chunk ended it before `want`


def test_the_decoder_of_the_bench_joins_events_split_across_chunks() -> None:
    body = encode_json({"x": "é" * 50}, event="a", id="1") + encode("", event="b")
    mid = len(body) // 2 + 1
    decoder = ChunkedEvents()
    events = decoder.feed(chunked(body[:mid], body[mid:])[:-5])  # the body, not its end yet
    assert [(e.event, e.id) for e in events] == [("a", "1"), ("b", "1")]  # empty data dispatches
    assert not decoder.ended
    assert decoder.feed(b"0\r\n\r\n") == []
    assert decoder.ended
