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
