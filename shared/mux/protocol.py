"""The mux wire protocol v1 (docs/mux.md), pure: the POST body's checks and the frames' bytes.

No I/O here, so every rule is tested on its own. A refusal is a :class:`BadRequest` naming the
field, answered 400 as the project's other JSON errors are.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ..encoding import compact_json, encode

__all__ = [
    "MAX_BODY",
    "MAX_KEY",
    "BadRequest",
    "BadTopic",
    "Change",
    "Subscribe",
    "hello_frame",
    "parse_change",
    "relay_frame",
    "shutdown_frame",
    "split_topic",
    "state_frame",
]

MAX_KEY = 64
MAX_BODY = 256 * 1024  # 64 topics with long paths and tokens fit many times over
MAX_PATH = 2048
MAX_LAST_ID = 1024
MAX_AUTHORIZATION = 4096
_KEY = re.compile(r"[A-Za-z0-9:._-]{1,64}")
# Header values may not hold line breaks or NUL (they would end the header, RFC 9110 5.5).
_BAD_HEADER_CHARS = re.compile(r"[\r\n\0]")
# The mux's own paths and anything else of the wrapper: a topic there would recurse.
MUX_PREFIX = "/sse/"


class BadRequest(ValueError):
    """The POST body is not a valid change; ``field`` names what to fix (400)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = f"{field}: {detail}"


class BadTopic(ValueError):
    """A topic path the mux will not run (refused on the topic with a ``t`` error)."""


@dataclass(frozen=True, slots=True)
class Subscribe:
    k: str
    path: str  # the path as given, query included
    last_event_id: str | None = None
    authorization: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    subscribe: tuple[Subscribe, ...] = ()
    unsubscribe: tuple[str, ...] = ()


def _key(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise BadRequest(field, f"a key is 1 to {MAX_KEY} characters of A-Z a-z 0-9 : . _ - (got {_show(value)})")
    return value


def _optional_text(value: Any, field: str, limit: int, header: bool) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(field, f"must be a string or null (got {_show(value)})")
    if len(value) > limit:
        raise BadRequest(field, f"is {len(value)} characters long, the limit is {limit}")
    if header and _BAD_HEADER_CHARS.search(value):
        raise BadRequest(field, "must not contain CR, LF or NUL")
    return value or None


def _show(value: Any) -> str:
    text = json.dumps(value)[:40] if not isinstance(value, bytes) else repr(value)[:40]
    return f"{type(value).__name__} {text}"


def parse_change(body: bytes) -> Change:
    """The POST body ``{"subscribe": [...], "unsubscribe": [...]}`` checked, or :class:`BadRequest`."""
    if len(body) > MAX_BODY:
        raise BadRequest("body", f"is {len(body)} bytes, the limit is {MAX_BODY}")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("body", f"is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BadRequest("body", f"must be a JSON object with 'subscribe' and/or 'unsubscribe' (got {_show(doc)})")
    unknown = sorted(set(doc) - {"subscribe", "unsubscribe"})
    if unknown:
        raise BadRequest(unknown[0], "unknown field; the fields are 'subscribe' and 'unsubscribe'")
    subs: list[Subscribe] = []
    seen: set[str] = set()
    raw_subs = doc.get("subscribe") or []
    if not isinstance(raw_subs, list):
        raise BadRequest("subscribe", f"must be a list (got {_show(raw_subs)})")
    for i, item in enumerate(raw_subs):
        where = f"subscribe[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(where, f"must be an object with 'k' and 'path' (got {_show(item)})")
        extra = sorted(set(item) - {"k", "path", "last_event_id", "authorization"})
        if extra:
            raise BadRequest(
                f"{where}.{extra[0]}", "unknown field; the fields are k, path, last_event_id, authorization"
            )
        k = _key(item.get("k"), f"{where}.k")
        if k in seen:
            raise BadRequest(f"{where}.k", f"key {k!r} is subscribed twice in this request")
        seen.add(k)
        path = item.get("path")
        if not isinstance(path, str) or not path:
            raise BadRequest(f"{where}.path", f"must be the path of a stream, e.g. '/chat/events' (got {_show(path)})")
        if len(path) > MAX_PATH:
            raise BadRequest(f"{where}.path", f"is {len(path)} characters long, the limit is {MAX_PATH}")
        # Whether it is a stream this server runs is the topic's answer (a `t` error), not the
        # request's: one bad topic does not refuse the others sent with it.
        last_id = _optional_text(item.get("last_event_id"), f"{where}.last_event_id", MAX_LAST_ID, header=True)
        auth = _optional_text(item.get("authorization"), f"{where}.authorization", MAX_AUTHORIZATION, header=True)
        subs.append(Subscribe(k, path, last_id, auth))
    raw_unsubs = doc.get("unsubscribe") or []
    if not isinstance(raw_unsubs, list):
        raise BadRequest("unsubscribe", f"must be a list of keys (got {_show(raw_unsubs)})")
    unsubs = tuple(_key(k, f"unsubscribe[{i}]") for i, k in enumerate(raw_unsubs))
    return Change(tuple(subs), unsubs)


def split_topic(path: str) -> tuple[str, str]:
    """``(path, query string)`` of a topic, or :class:`BadTopic` saying why it is not one.

    Only an absolute path of this origin (no scheme, host or fragment), without dot segments
    (they would name another route than the one checked), outside the mux's own ``/sse/``.
    """
    if len(path) > MAX_PATH:
        raise BadTopic(f"is {len(path)} characters long, the limit is {MAX_PATH}")
    if not path.startswith("/") or path.startswith("//"):
        raise BadTopic(f"must be an absolute path of this server, starting with one '/' (got {path[:60]!r})")
    if any(ord(c) < 0x21 or c == "\x7f" for c in path):
        raise BadTopic("must not contain spaces or control characters (percent-encode them)")
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or parts.fragment or "#" in path:
        raise BadTopic("must be a path and query only, no scheme, host or fragment")
    decoded = unquote(parts.path)
    segments = decoded.split("/")
    if any(s in (".", "..") for s in segments) or "\\" in decoded or "\0" in decoded:
        raise BadTopic("must not contain '.' or '..' segments or backslashes")
    if decoded == MUX_PREFIX.rstrip("/") or decoded.startswith(MUX_PREFIX):
        raise BadTopic("the mux's own paths (/sse/...) cannot be topics")
    return decoded, parts.query


# -- frames ---------------------------------------------------------------------------------


def hello_frame(conn: str, token: str, max_topics: int, retry_ms: int) -> bytes:
    return encode(compact_json({"conn": conn, "token": token, "max_topics": max_topics}), event="mux", retry=retry_ms)


def relay_frame(k: str, event: str, id: str | None, data: str) -> bytes:
    # Built by hand, not with encode(): JSON has no raw line breaks, so it is one data line, and
    # this runs once per relayed event.
    return b"event: m\ndata: " + compact_json({"k": k, "e": event, "id": id, "d": data}).encode() + b"\n\n"


def state_frame(k: str, state: str, status: int | None = None, body: Any = None) -> bytes:
    doc: dict[str, Any] = {"k": k, "state": state}
    if status is not None:
        doc["status"] = status
        doc["body"] = body
    return b"event: t\ndata: " + compact_json(doc).encode() + b"\n\n"


def shutdown_frame(retry_ms: int) -> bytes:
    return encode(compact_json({"reason": "server shutting down"}), event="shutdown", retry=retry_ms)
