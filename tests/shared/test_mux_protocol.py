"""The mux protocol's pure parts (shared.mux.protocol): the POST body's checks, which paths can
be topics, and the frames' bytes read back with the WHATWG decoder."""

from __future__ import annotations

import json

import pytest

from shared.decoder import Decoder
from shared.mux.protocol import (
    BadRequest,
    BadTopic,
    Change,
    Subscribe,
    hello_frame,
    parse_change,
    relay_frame,
    shutdown_frame,
    split_topic,
    state_frame,
)
from shared.mux.relay import BlockCache, Relay


def test_a_change_is_parsed_with_its_optional_fields() -> None:
    body = {
        "subscribe": [
            {"k": "tab-1:3", "path": "/chat/rooms/general/events", "last_event_id": "abc-7"},
            {"k": "t.2", "path": "/exec/events", "last_event_id": None, "authorization": "Bearer x"},
        ],
        "unsubscribe": ["tab-1:2"],
    }
    assert parse_change(json.dumps(body).encode()) == Change(
        (
            Subscribe("tab-1:3", "/chat/rooms/general/events", "abc-7", None),
            Subscribe("t.2", "/exec/events", None, "Bearer x"),
        ),
        ("tab-1:2",),
    )
    assert parse_change(b"{}") == Change()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"null", "body"),
        (b'{"subscribe": [{"k": "", "path": "/a"}]}', "subscribe[0].k"),
        (b'{"subscribe": [{"k": "a/b", "path": "/a"}]}', "subscribe[0].k"),
        (b'{"subscribe": [{"k": "a"}]}', "subscribe[0].path"),
        (b'{"subscribe": [{"k": "a", "path": "/a", "authorization": "x\\ny"}]}', "subscribe[0].authorization"),
        (b'{"subscribe": [{"k": "a", "path": "/a", "last_event_id": 5}]}', "subscribe[0].last_event_id"),
        (b'{"subscribe": [{"k": "a", "path": "/a", "room": "x"}]}', "subscribe[0].room"),
        (b'{"unsubscribe": [1]}', "unsubscribe[0]"),
    ],
)
def test_a_bad_change_names_its_field(body: bytes, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_change(body)
    assert caught.value.field == field
    assert caught.value.detail.startswith(field)


def test_a_topic_is_a_path_of_this_origin_outside_the_mux() -> None:
    assert split_topic("/chat/rooms/caf%C3%A9/events?x=1&y=2") == ("/chat/rooms/café/events", "x=1&y=2")
    for bad in [
        "chat/events",
        "//evil.example/events",
        "http://evil.example/events",
        "/a/../sse/mux",
        "/a/%2e%2e/sse/mux",
        "/a/./b",
        "/sse/mux",
        "/sse/mux/abc",
        "/SSE/../sse/worker.js",
        "/a b",
        "/a\\b",
        "/a#frag",
    ]:
        with pytest.raises(BadTopic):
            split_topic(bad)


def test_frames_decode_to_what_the_protocol_says() -> None:
    data = hello_frame("c1", "tok", 64, 3000) + relay_frame("k", "message", None, "line one\nline two")
    data += relay_frame("k", "tick", "7", '{"n": 7}') + state_frame("k", "error", 403, {"detail": "no"})
    data += shutdown_frame(1000)
    events = Decoder().feed(data)
    assert [e.event for e in events] == ["mux", "m", "m", "t", "shutdown"]
    assert events[0].json() == {"conn": "c1", "token": "tok", "max_topics": 64}
    assert events[0].retry == 3000
    assert events[1].json() == {"k": "k", "e": "message", "id": None, "d": "line one\nline two"}
    assert events[2].json()["id"] == "7"
    assert events[3].json() == {"k": "k", "state": "error", "status": 403, "body": {"detail": "no"}}
    assert events[4].retry == 1000
    assert all(e.id is None for e in events)  # the mux stream sets no id of its own


def _frames_by_decoder(k: str, chunks: list[bytes], last_id: str | None) -> bytes:
    decoder = Decoder(last_id)
    out = b""
    for chunk in chunks:
        for e in decoder.feed(chunk):
            out += relay_frame(k, e.event, e.id, e.data)
    return out


@pytest.mark.parametrize(
    "chunks",
    [
        [b"retry: 3000\n\nevent: presence\ndata: {}\n\n", b"id: 1\ndata: a\n\n", b": ping\n\n", b"data: b\n\n"],
        [b"\xef\xbb\xbfdata: bom first\n\n", b"id: 2\nevent: tick\ndata: x\ndata: y\n\n"],
        [b"id: 1\ndata: split", b" line\n", b"\n", b"data: then\n\n", b"id: 3\r\ndata: crlf\r\n\r\n", b"data: z\n\n"],
        [b"data: a\r", b"\ndata: b\n\n", b"id:\ndata: cleared\n\n"],
    ],
)
def test_relayed_frames_equal_the_decoders_whatever_the_chunks(chunks: list[bytes]) -> None:
    cache = BlockCache()
    relay = Relay("tab:1", "0", cache)
    assert b"".join(relay.frames(c) for c in chunks) == _frames_by_decoder("tab:1", chunks, "0")


def test_events_shared_by_many_topics_are_parsed_once() -> None:
    cache = BlockCache()
    relays = [Relay(f"k{i}", None, cache) for i in range(50)]
    first = b"retry: 3000\n\n"
    shared = b'id: 7\nevent: tick\ndata: {"n": 7}\n\nevent: typing\ndata: ann\n\n'
    for i, relay in enumerate(relays):
        assert relay.frames(first) == b""
        assert relay.frames(shared) == _frames_by_decoder(f"k{i}", [first, shared], None)
    assert (cache.misses, cache.hits) == (2, 98)  # two events, parsed once each
    assert all(r.last_id == "7" for r in relays)
    # The same bytes read from another position (another id in force) are parsed again: an
    # id-less event carries the id of the topic's own stream.
    ephemeral = b"event: typing\ndata: bob\n\n"
    assert b'"id":"7"' in relays[0].frames(ephemeral)
    late = Relay("late", "3", cache)
    late.frames(first)
    assert b'"id":"3"' in late.frames(ephemeral)


def test_a_lagging_topics_joined_chunk_reuses_what_the_others_parsed() -> None:
    cache = BlockCache()
    ahead, behind = Relay("a", None, cache), Relay("b", None, cache)
    events = [f"id: {n}\nevent: tick\ndata: {n}\n\n".encode() for n in range(1, 6)]
    for relay in (ahead, behind):
        relay.frames(b"retry: 1000\n\n")
    for event in events:
        ahead.frames(event)
    joined = b"".join(events) + b": ping\n\n"  # what the hub writes to a subscriber that fell behind
    assert behind.frames(joined) == _frames_by_decoder("b", [b"retry: 1000\n\n", joined], None)
    assert cache.misses == 6  # five events and the comment, once each
    assert behind.last_id == "5"
