"""The wire encoder against the WHATWG spec's examples, and round-tripped through our decoder."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.decoder import Decoder
from shared.decoder import Event as Decoded
from shared.encoding import Event, encode, encode_comment, encode_json, validate_event_id


def decode(stream: str, chunks: list[int] | None = None) -> list[Decoded]:
    """Feed ``stream`` (as UTF-8) through :class:`shared.decoder.Decoder`, cut in byte chunks of
    the given sizes (so a cut may fall inside a character or a CRLF)."""
    raw = stream.encode("utf-8", "surrogatepass")
    decoder = Decoder()
    out: list[Decoded] = []
    pos = 0
    for size in chunks or []:
        out.extend(decoder.feed(raw[pos : pos + size]))
        pos += size
    out.extend(decoder.feed(raw[pos:]))
    return out


def test_spec_example_multiline_data() -> None:
    # The spec's stock-ticker example: two data lines join with "\n".
    assert encode("YHOO\n+2\n10") == b"data: YHOO\ndata: +2\ndata: 10\n\n"


def test_spec_example_ids_and_types() -> None:
    body = encode("first event", id="1") + encode("second event", id="2", event="add") + encode(" third event")
    events = decode(body.decode())
    assert [(e.id, e.event, e.data) for e in events] == [
        ("1", "message", "first event"),
        ("2", "add", "second event"),
        # The spec: "data:  third event" keeps the second space; our encoder writes "data: " + text.
        ("2", "message", " third event"),
    ]


def test_all_line_breaks_split_data_lines() -> None:
    assert encode("a\rb\r\nc\nd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"


def test_comment_and_retry() -> None:
    assert encode_comment("ping") == b": ping\n\n"
    assert encode(retry=2500) == b"retry: 2500\n\n"
    assert encode("x", retry=0) == b"retry: 0\ndata: x\n\n"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_event_name_with_line_break_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        encode("x", event=bad)


@pytest.mark.parametrize("bad", ["a\nb", "", "a b", "<script>", "x" * 65, "é", "a\0"])
def test_bad_ids_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid SSE event id"):
        encode("x", id=bad)
    with pytest.raises(ValueError, match="invalid SSE event id"):
        validate_event_id(bad)


@pytest.mark.parametrize("bad", [1.5, "10", -1, True])
def test_retry_must_be_an_int(bad: object) -> None:
    with pytest.raises(ValueError, match="retry"):
        encode("x", retry=bad)  # type: ignore[arg-type]


def test_empty_event_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        encode()


def test_json_is_one_line() -> None:
    assert encode_json({"a": "x\ny"}, event="e", id="k-1") == b'id: k-1\nevent: e\ndata: {"a":"x\\ny"}\n\n'


def test_event_dataclass() -> None:
    assert Event("hi", event="greet", id="1").encode() == b"id: 1\nevent: greet\ndata: hi\n\n"


ids = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="<"), min_size=1, max_size=64
)
names = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"), min_size=1, max_size=20
)
datas = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200)
events = st.lists(st.tuples(datas, st.one_of(st.none(), names), st.one_of(st.none(), ids)), min_size=1, max_size=8)


@given(
    events=events,
    newline=st.sampled_from(["\n", "\r", "\r\n"]),
    bom=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=7), max_size=40),
)
def test_round_trip_through_the_decoder(
    events: list[tuple[str, str | None, str | None]], newline: str, bom: bool, cuts: list[int]
) -> None:
    """Whatever we encode, a conforming decoder reads back: any line ending, a BOM, any chunking."""
    wire = b"".join(encode(data, event=event, id=id_) for data, event, id_ in events).decode()
    wire = wire.replace("\n", newline)
    if bom:
        wire = "\ufeff" + wire
    decoded = decode(wire, cuts)
    expected_id: str | None = None
    expected = []
    for data, event, id_ in events:
        expected_id = id_ if id_ is not None else expected_id
        expected.append(
            (event or "message", "\n".join(data.replace("\r\n", "\n").replace("\r", "\n").split("\n")), expected_id)
        )
    assert [(e.event, e.data, e.id) for e in decoded] == expected


def test_nul_in_data_is_sent_as_is() -> None:
    wire = encode("a\0b")
    assert wire == b"data: a\x00b\n\n"
    assert [(e.event, e.data) for e in decode(wire.decode())] == [("message", "a\0b")]


@pytest.mark.parametrize("field", ["data", "event", "comment"])
def test_a_lone_surrogate_is_a_clear_value_error(field: str) -> None:
    kwargs: dict[str, Any] = {field: "x\ud800y"}
    with pytest.raises(ValueError, match="lone surrogate") as info:
        encode(**kwargs)
    assert type(info.value) is ValueError  # not a UnicodeEncodeError from deep inside


def test_empty_data_is_an_event() -> None:
    """``encode("")`` dispatches an event with empty data, as every browser does."""
    assert [(e.event, e.data) for e in decode(encode("").decode())] == [("message", "")]
