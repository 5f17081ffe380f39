"""A run's event stream, served straight from its log file (one instance), or from the run's
topic on a shared backend (several instances; see ``mirror.py``).

Every subscriber has its own read offset into the file: a late joiner starts at 0 and reads the
whole history at its own pace, then follows live output; a reconnecting client sends
``Last-Event-ID: o<offset>`` and continues at exactly that byte. Memory per subscriber is one
read buffer, however far behind it is. The shared ``Hub`` carries the run *list* updates;
run output does not go through it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable

from shared.backends.base import Backend, BackendUnavailable
from shared.encoding import encode, encode_comment, encode_json
from shared.hub import Hub, HubSettings, Subscription

from .cluster import OwnerWatch
from .grants import Hold
from .runlog import RunLog, encode_frames
from .runner import Runner

__all__ = ["ExecHub", "mirrored_events", "run_events"]

READ_BYTES = 1 << 18
HEARTBEAT_S = 15.0
SHUTDOWN_RETRY_MS = 1000


class ExecHub(Hub):
    """The app's hub (run-list updates), which also ends the run streams on shutdown.

    ``shared.server.Server`` closes the hubs in ``state.sse_hubs`` *before* uvicorn waits for open
    responses; run streams are not hub subscriptions, so closing the hub has to end them too.
    """

    def __init__(self, runner: Runner, backend: Backend | None = None, settings: HubSettings | None = None) -> None:
        super().__init__(backend, settings)
        self.runner = runner
        self.streams_closed = False
        # Run before the streams end (once): with several instances, ending the runs and leaving.
        self.before_close: list[Callable[[], Awaitable[None]]] = []

    async def close(self) -> None:
        hooks, self.before_close = self.before_close, []
        for hook in hooks:
            await hook()
        self.streams_closed = True
        self.runner.wake_all()
        await super().close()


async def run_events(
    hub: ExecHub,
    run_id: str,
    *,
    start: int,
    reset: bool,
    prelude: bytes,
    heartbeat: float = HEARTBEAT_S,
    hold: Hold | None = None,
) -> AsyncGenerator[bytes, None]:
    """``retry`` + ``prelude``, the log from byte ``start``, then live frames until ``exit``
    (or until ``hold``'s credential is revoked or expires: then a ``revoked`` event)."""
    runner = hub.runner
    live = runner.live.get(run_id)
    reader = RunLog(runner.log_path(run_id))
    if live is not None:
        live.viewers += 1
        live.pulse.fire()
        if hold is not None:
            hold.on_end(live.pulse.fire)
    try:
        first = encode(retry=3000) + prelude
        if reset:
            # The id was not one of this run's frame boundaries: start over from the beginning.
            # `o0` ("from the start"): the browser's next resume is one it can make, never the bad id.
            first += encode_json({"reason": "unknown", "latest_id": None}, event="reset", id="o0")
        yield first
        pos = start
        shown_viewers = -1
        while True:
            seen = live.pulse.version if live is not None else 0
            if hub.streams_closed:
                yield encode(
                    json.dumps({"reason": "server shutting down"}),
                    event="shutdown",
                    id=f"o{pos}",
                    retry=SHUTDOWN_RETRY_MS,
                )
                return
            if hold is not None and hold.reason is not None:
                yield hold.farewell()
                return
            reader.refresh()
            frames = reader.read(pos, READ_BYTES)
            out: list[bytes] = []
            if frames:
                out.append(encode_frames(frames))
                pos = frames[-1].end
            ended = bool(frames) and frames[-1].kind == b"x"  # the exit frame is always the last
            if live is not None and not ended and live.viewers != shown_viewers:
                shown_viewers = live.viewers
                out.append(encode_json({"count": shown_viewers}, event="viewers"))
            if out:
                yield b"".join(out)
            if ended:
                return
            if frames:
                continue  # there may be more already
            if live is None or live.finished:
                return  # a log without an exit frame: nothing more will come
            if not await live.pulse.wait(seen, heartbeat):
                yield encode_comment("ping")
    finally:
        reader.close()
        if live is not None:
            live.viewers -= 1
            live.pulse.fire()


_EXIT = b"\nevent: exit\n"


async def mirrored_events(
    hub: Hub,
    topic: str,
    after: str,
    prelude: bytes,
    *,
    hold: Hold | None = None,
    owner: OwnerWatch | None = None,
) -> AsyncGenerator[bytes, None]:
    """``retry`` + ``prelude``, the run's topic after ``after``, live, until its ``exit`` event.

    Event data never holds a raw line break (output is JSON-escaped), so ``event: exit`` at the
    start of a line is always the exit event's own field.

    ``hold``: the stream ends with ``revoked`` when its credential does. ``owner``: the run's
    owner is watched while the run goes on; when it becomes unreachable (or reachable again) the
    stream says so at once, between two events of the topic (the subscription is ended and made
    again from the last id it delivered, so nothing is lost or repeated).
    """
    current: list[Subscription] = []

    def wake() -> None:
        if current and (owner is None or owner.moved() or (hold is not None and hold.reason is not None)):
            current[0].close("woken")

    if hold is not None:
        hold.on_end(wake)
    watchers = owner.cluster.watchers if owner is not None else None
    if watchers is not None:
        watchers.add(wake)
    first = True
    try:
        while True:
            async with hub.subscribe(topic, after) as sub:
                current[:] = [sub]
                if hold is not None and hold.reason is not None:
                    sub.close("woken")  # it ended while we subscribed: what is kept, then the end
                if first:
                    yield encode(retry=3000) + prelude
                    first = False
                if owner is not None and owner.moved():
                    yield owner.event()
                async for chunk in sub:
                    yield chunk
                    if _EXIT in chunk:
                        return
                current.clear()
                after = sub.last_id or after
                if sub.ended_reason == "shutdown":
                    yield hub.shutdown_event(sub.last_id)
                    return
                if hold is not None and hold.reason is not None:
                    yield hold.farewell()
                    return
                if sub.ended_reason != "woken":
                    return
                if owner is not None and owner.moved():
                    yield owner.event()
    except BackendUnavailable:
        yield encode(retry=1000, comment="event store unavailable; reconnect shortly")
    finally:
        if watchers is not None:
            watchers.discard(wake)
