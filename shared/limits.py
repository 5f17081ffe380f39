"""Limits per connection: how many event streams one client may hold, how long one write may take.

Both guard the server against clients that cost it without reading: one address opening stream
after stream, and readers that stop reading. A stream to a client that stopped reading does not
fall behind in the hub (where ``HubSettings.window`` would end it): it is parked in the server's
flow control, waiting for socket buffers that never drain, so only a clock can end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

__all__ = ["ABORT_CONNECTION", "ConnectionLimiter", "TooManyStreams", "WriteWatchdog", "client_address"]

log = logging.getLogger(__name__)

_BATCH = 50  # stuck streams ended between two turns of the event loop

# Key in the ASGI lifespan state (copied into every request's ``scope["state"]``) under which a
# server offers ``abort(scope) -> bool``: reset the connection of that request at once, dropping
# whatever is still buffered for it. ``shared.server.Server`` provides it; ASGI itself has no way
# to drop a connection whose client stopped reading (closing would wait for the buffers to drain).
ABORT_CONNECTION = "sse.abort_connection"
# Key in ``scope["extensions"]`` of a mux topic's internal request (shared.mux.topic).
MUX_SCOPE_KEY = "sse.mux"

Scope = Mapping[str, object]


def client_address(scope: Scope, *, limit_loopback: bool = False) -> str | None:
    """The address per-client caps count a request under (``scope["client"]``), or ``None``.

    ``None`` for a Unix socket or a client without an address, and for loopback unless
    ``limit_loopback``: the apps listen on 127.0.0.1 by default, and behind a reverse proxy
    every client has the proxy's address unless the server trusts forwarded headers
    (``--proxy-headers --forwarded-allow-ips``), which then puts the real client address here.
    """
    client = scope.get("client")
    if not isinstance(client, tuple | list) or not client:
        return None
    host = str(client[0])
    if not limit_loopback:
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).is_loopback:
                return None
    return host


class TooManyStreams(Exception):
    """A client address already holds ``limit`` open streams; answered with 429 and Retry-After."""

    def __init__(self, client: str, limit: int, retry_after: int) -> None:
        super().__init__(
            f"too many open event streams from {client} (the limit is {limit} per client address); "
            f"close one before opening another, or retry in {retry_after}s"
        )
        self.client = client
        self.limit = limit
        self.retry_after = retry_after


class ConnectionLimiter:
    """Counts open streams per client address (``scope["client"]``) and refuses one too many.

    Loopback clients are exempt unless ``limit_loopback``: the apps listen on 127.0.0.1 by
    default, and behind a reverse proxy every client has the proxy's address unless the server
    trusts forwarded headers (``--proxy-headers --forwarded-allow-ips``), which then puts
    the real client address in the scope. Share one limiter between hubs to cap a client across
    apps.
    """

    def __init__(self, max_per_client: int | None = 32, *, limit_loopback: bool = False, retry_after: int = 5) -> None:
        if max_per_client is not None and max_per_client < 1:
            raise ValueError("max_per_client must be at least 1 (or None for no limit)")
        self.max_per_client = max_per_client
        self.limit_loopback = limit_loopback
        self.retry_after = retry_after
        self._open: dict[str, int] = {}

    def _key(self, scope: Scope) -> str | None:
        if self.max_per_client is None:
            return None
        extensions = scope.get("extensions")
        if isinstance(extensions, dict) and MUX_SCOPE_KEY in extensions:
            # A topic of a mux connection (shared.mux): the connection counted once, under the
            # mux's own limiter, and its topics have their own caps (per connection, per client).
            return None
        return client_address(scope, limit_loopback=self.limit_loopback)

    def acquire(self, scope: Scope) -> str | None:
        """Count one more stream for the scope's client; the key to :meth:`release` later.

        Raises :class:`TooManyStreams` when the client is at the limit.
        """
        key, limit = self._key(scope), self.max_per_client
        if key is None or limit is None:
            return None
        count = self._open.get(key, 0)
        if count >= limit:
            raise TooManyStreams(key, limit, self.retry_after)
        self._open[key] = count + 1
        return key

    def release(self, key: str | None) -> None:
        if key is None:
            return
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)  # an address that left costs nothing

    def stats(self) -> dict[str, int]:
        return {"clients": len(self._open), "streams": sum(self._open.values())}


class Watched(Protocol):
    """A stream the watchdog times: when its current write began (``None``: not writing)."""

    writing_since: float | None

    def write_stuck(self, seconds: float) -> None:
        """Called once its current write has taken longer than the timeout: end the stream."""


class WriteWatchdog:
    """Ends streams whose current write has not completed within ``timeout`` seconds.

    One sweep task for all streams (every ``timeout / 4`` s), so a write costs two attribute
    stores, not a timer each.
    """

    def __init__(self, timeout: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("write timeout must be positive (or None for none)")
        self.timeout = timeout
        self.clock = clock
        self._streams: set[Watched] = set()
        self._task: asyncio.Task[None] | None = None
        self.ended = 0  # streams ended for a stuck write, for stats and tests

    def add(self, stream: Watched) -> None:
        self._streams.add(stream)

    def discard(self, stream: Watched) -> None:
        self._streams.discard(stream)

    def start(self) -> None:
        if self.timeout is not None and self._task is None:
            self._task = asyncio.create_task(self._run(self.timeout), name="sse-write-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def stuck(self) -> list[Watched]:
        """Streams whose current write has waited longer than the timeout."""
        if self.timeout is None:
            return []
        cutoff = self.clock() - self.timeout
        return [s for s in self._streams if s.writing_since is not None and s.writing_since < cutoff]

    def end(self, stream: Watched) -> None:
        if stream not in self._streams:
            return  # gone meanwhile, or ended already
        self._streams.discard(stream)
        self.ended += 1
        try:
            stream.write_stuck(self.clock() - (stream.writing_since or 0.0))
        except Exception:
            log.exception("ending a stuck stream failed")

    async def _run(self, timeout: float) -> None:
        period = min(5.0, max(0.05, timeout / 4))
        while True:
            await asyncio.sleep(period)
            for i, stream in enumerate(self.stuck()):
                self.end(stream)
                if i % _BATCH == _BATCH - 1:
                    # A thousand streams torn down in one go would stall every other client for
                    # a tenth of a second; in batches, their events go out in between.
                    await asyncio.sleep(0.005)

    def waiting(self, longer_than: float = 0.0) -> int:
        """How many streams have a write waiting for longer than ``longer_than`` seconds."""
        cutoff = self.clock() - longer_than
        return sum(1 for s in self._streams if s.writing_since is not None and s.writing_since <= cutoff)

    def stats(self) -> dict[str, int]:
        return {"streams": len(self._streams), "waiting": self.waiting(), "ended_stuck": self.ended}
