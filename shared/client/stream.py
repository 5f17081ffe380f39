"""Listening to any SSE URL with automatic reconnect and resume, async or sync.

:class:`shared.decoder.Decoder` parses the stream (the spec's algorithm, Chromium's behaviour
where the spec leaves room); reconnection follows WHATWG HTML 9.2.3, "Processing model":

- after the stream ends or the connection drops, wait the reconnection time (``retry:``, with
  backoff and jitter from :class:`~shared.client.backoff.Backoff`) and connect again, sending
  ``Last-Event-ID`` so the server resumes where we were;
- ``event: shutdown`` (our servers send it when they stop) means "reconnect soon": it is not
  handed to the caller, only reported through ``on_status``;
- ``event: reset`` (the server cannot resume from our id) *is* handed to the caller, who must
  reload its state: ``Event.is_reset``;
- an answer the client cannot fix by waiting (404, 403, 204, not ``text/event-stream``, a
  ``charset`` other than UTF-8) ends the iteration with :class:`StreamError`; 5xx, 408, 429 and
  network errors are retried;
- ``Last-Event-ID`` is sent whenever the last event id is not empty, as the browser does, in
  UTF-8 (any id the server can send, ``café`` or an emoji, comes back as the browser sends it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from ..decoder import Decoder, Event
from .backoff import Backoff

__all__ = ["Event", "EventStream", "Status", "StreamError", "SyncEventStream"]

State = Literal["connecting", "open", "retrying", "failed", "closed"]


@dataclass(frozen=True, slots=True)
class Status:
    """A change of connection state, for logs and badges. ``delay`` is set when ``retrying``."""

    state: State
    detail: str = ""
    delay: float | None = None
    attempt: int = 0


class StreamError(Exception):
    """Listening cannot go on: the server refused in a way waiting will not fix, or we gave up."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


_SHUTDOWN = object()
# What EventSource sends (httpx-sse sent the same); Cache-Control keeps proxies from answering.
_ACCEPT = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


class _Base:
    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        last_event_id: str | None = None,
        backoff: Backoff | None = None,
        read_timeout: float | None = 45.0,
        max_attempts: int | None = None,
        on_status: Callable[[Status], None] | None = None,
    ) -> None:
        self.url = url
        # Read at every (re)connect, so an owner may change it (e.g. to add a session token).
        self.headers: dict[str, str] = dict(headers or {})
        if last_event_id and any(c in last_event_id for c in "\r\n\0"):
            # No stream can give such an id (the parser splits lines there, and ignores an id
            # with NUL), and no HTTP header can carry it.
            raise ValueError(f"a last event id cannot contain CR, LF or NUL: {last_event_id[:80]!r}")
        self.last_event_id = last_event_id or None
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.on_status = on_status
        self.state: State = "connecting"
        # Our servers send a heartbeat comment every 15 s: a read timeout of three beats tells a
        # dead connection (a laptop that slept, a NAT that forgot us) from a quiet stream.
        self.timeout = httpx.Timeout(10.0, read=read_timeout)
        self._failures = 0
        self._decoder = Decoder(self.last_event_id)
        self._closed = False

    # -- shared steps of the loop ------------------------------------------------------------

    def _set(self, state: State, detail: str = "", delay: float | None = None) -> None:
        self.state = state
        if self.on_status is not None:
            self.on_status(Status(state, detail, delay, self._failures))

    def _request_headers(self) -> list[tuple[bytes, bytes]]:
        headers = {**_ACCEPT, **self.headers}
        out = [(name.encode("ascii"), value.encode()) for name, value in headers.items()]
        if self.last_event_id:
            out.append((b"Last-Event-ID", last_event_id_header(self.last_event_id)))
        return out

    def _classify(self, response: httpx.Response, body: bytes) -> None:
        """Raise :class:`_Retry` or :class:`StreamError` unless the response is a stream to read."""
        status = response.status_code
        if status == 200:
            problem = _not_an_event_stream(response.headers.get("content-type", ""))
            if problem:
                raise StreamError(f"{self.url} {problem}", status)
            return
        detail = _detail(body) or response.reason_phrase
        if status == 204:
            # WHATWG: "HTTP 204 No Content ... must prevent the user agent from reconnecting".
            raise StreamError(f"the server asked us to stop listening (204): {detail}", status)
        if status in _RETRYABLE:
            raise _Retry(f"HTTP {status}: {detail}", _retry_after(response))
        raise StreamError(f"HTTP {status} from {self.url}: {detail}", status)

    def _opened(self) -> None:
        self._failures = 0
        self.backoff.opened()
        # A new parser per connection, its id buffer starting at the id we resumed from.
        self._decoder = Decoder(self.last_event_id)
        self._set("open", self.url)

    def _feed(self, chunk: bytes) -> list[Event | object]:
        """The events ``chunk`` completes (``_SHUTDOWN`` for ours); applies ``retry:`` and ids."""
        decoder = self._decoder
        events = decoder.feed(chunk)
        if decoder.retry is not None:
            self.backoff.server_retry(decoder.retry)
        # Every blank line sets the last event id, even one that dispatches nothing.
        self.last_event_id = decoder.last_event_id
        return [_SHUTDOWN if ev.event == "shutdown" else ev for ev in events]

    def _next_delay(self, reason: str, retry_after: float | None) -> float:
        self._failures += 1
        if self.max_attempts is not None and self._failures > self.max_attempts:
            self._set("failed", reason)
            raise StreamError(f"gave up after {self.max_attempts} attempts; last: {reason}")
        delay = self.backoff.next_delay(retry_after)
        self._set("retrying", reason, delay)
        return delay


class EventStream(_Base):
    """Async: ``async with EventStream(url) as events: async for ev in events: ...``.

    Reconnects forever (or ``max_attempts`` failures in a row) and resumes by ``Last-Event-ID``.
    Pass an ``httpx.AsyncClient`` to share a connection pool; otherwise one is made and closed.
    """

    def __init__(self, url: str, *, client: httpx.AsyncClient | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._client = client
        self._gen: AsyncIterator[Event] | None = None

    def __aiter__(self) -> AsyncIterator[Event]:
        if self._gen is None:
            self._gen = self._events()
        return self._gen

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        gen, self._gen = self._gen, None
        if gen is not None:
            await gen.aclose()  # type: ignore[attr-defined]

    async def _events(self) -> AsyncIterator[Event]:
        client = self._client or httpx.AsyncClient(follow_redirects=True)
        try:
            while not self._closed:
                retry_after: float | None = None
                try:
                    async with client.stream(
                        "GET", self.url, headers=self._request_headers(), timeout=self.timeout
                    ) as response:
                        body = b"" if response.status_code == 200 else await response.aread()
                        self._classify(response, body)
                        self._opened()
                        reason = "the server ended the stream"
                        async for chunk in response.aiter_bytes():
                            for item in self._feed(chunk):
                                if not isinstance(item, Event):
                                    reason = "the server is shutting down"
                                    break
                                yield item
                            else:
                                continue
                            break
                except _Retry as exc:
                    reason, retry_after = exc.reason, exc.retry_after
                except httpx.LocalProtocolError as exc:
                    # Our own request cannot be sent (a header value HTTP refuses): no wait fixes it.
                    raise StreamError(f"cannot send the request to {self.url}: {exc}") from None
                except httpx.TransportError as exc:
                    reason = _describe(exc)
                if self._closed:
                    break
                await asyncio.sleep(self._next_delay(reason, retry_after))
        finally:
            self._set("closed")
            if self._client is None:
                await client.aclose()


class SyncEventStream(_Base):
    """Blocking: ``with SyncEventStream(url) as events: for ev in events: ...``."""

    def __init__(self, url: str, *, client: httpx.Client | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._client = client
        self._gen: Iterator[Event] | None = None

    def __iter__(self) -> Iterator[Event]:
        if self._gen is None:
            self._gen = self._events()
        return self._gen

    def __enter__(self) -> SyncEventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        gen, self._gen = self._gen, None
        if gen is not None:
            gen.close()  # type: ignore[attr-defined]

    def _events(self) -> Iterator[Event]:
        client = self._client or httpx.Client(follow_redirects=True)
        try:
            while not self._closed:
                retry_after: float | None = None
                try:
                    with client.stream(
                        "GET", self.url, headers=self._request_headers(), timeout=self.timeout
                    ) as response:
                        body = b"" if response.status_code == 200 else response.read()
                        self._classify(response, body)
                        self._opened()
                        reason = "the server ended the stream"
                        for chunk in response.iter_bytes():
                            for item in self._feed(chunk):
                                if not isinstance(item, Event):
                                    reason = "the server is shutting down"
                                    break
                                yield item
                            else:
                                continue
                            break
                except _Retry as exc:
                    reason, retry_after = exc.reason, exc.retry_after
                except httpx.LocalProtocolError as exc:
                    # Our own request cannot be sent (a header value HTTP refuses): no wait fixes it.
                    raise StreamError(f"cannot send the request to {self.url}: {exc}") from None
                except httpx.TransportError as exc:
                    reason = _describe(exc)
                if self._closed:
                    break
                time.sleep(self._next_delay(reason, retry_after))
        finally:
            self._set("closed")
            if self._client is None:
                client.close()


def last_event_id_header(last_id: str) -> bytes:
    """The ``Last-Event-ID`` value for ``last_id`` as Chromium sends it: UTF-8, without the
    spaces at either end (HTTP strips them from a header value anyway, and h11 refuses them)."""
    return last_id.strip(" \t").encode("utf-8")


def _not_an_event_stream(content_type: str) -> str:
    """Why Chromium's EventSource would refuse this ``Content-Type`` (fail, not reconnect), or ""."""
    mime, _, params = content_type.partition(";")
    mime = mime.strip().lower()  # media types are case-insensitive: Text/Event-Stream is fine
    if mime != "text/event-stream":
        return f"is not an event stream (Content-Type: {mime or 'none'})"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", ""):
            return f"sends its events in {value.strip()}, not UTF-8 (the only charset an event stream may have)"
    return ""


def _detail(body: bytes) -> str:
    """The ``detail`` of our JSON errors, or the start of any other body."""
    text = body.decode("utf-8", "replace").strip()
    with contextlib.suppress(ValueError, AttributeError):
        detail = json.loads(text).get("detail")
        if isinstance(detail, str):
            return detail
    return text[:200]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare for SSE servers; fall back to our backoff


def _describe(exc: httpx.TransportError) -> str:
    kind = {
        httpx.ConnectError: "cannot connect",
        httpx.ConnectTimeout: "connect timed out",
        httpx.ReadTimeout: "no data within the read timeout (dead connection?)",
        httpx.RemoteProtocolError: "connection closed mid-stream",
        httpx.ReadError: "connection lost",
    }
    for cls, text in kind.items():
        if isinstance(exc, cls):
            return f"{text}: {exc}" if str(exc) else text
    return f"{type(exc).__name__}: {exc}"
