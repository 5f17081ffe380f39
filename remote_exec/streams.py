"""A run's event stream: its topic through the hub, like every other stream, until ``exit``.

One path whatever the deployment: on a single instance the run's topic is read from its log file
(``logtopics.py``; ids ``o<offset>``), on several from the shared backend (``mirror.py``; the
backend's ids). Either way the hub gives the order, resume by Last-Event-ID, the end at the
run's ``exit`` event (``until``) and the ``shutdown`` event when the server stops. What is added
here is the run's own: the viewer's credential (its revocation ends the stream with
``revoked``), the viewer count, and, with several instances, the state of the run's owner.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.hub import Hub, Subscription
from shared.responses import SSEStream, sse_response

from .auth import Principal
from .cluster import OwnerWatch
from .grants import Grants, Hold
from .runner import LiveRun

__all__ = ["EXIT", "HEARTBEAT_S", "run_stream"]

HEARTBEAT_S = 15.0
EXIT = "exit"  # the run's last event: the hub ends its streams after it


def run_stream(
    hub: Hub,
    topic: str,
    start: str,
    prelude: bytes,
    *,
    grants: Grants,
    principal: Principal,
    live: LiveRun | None = None,
    owner: OwnerWatch | None = None,
) -> SSEStream:
    """``retry`` + ``prelude``, the run's topic after ``start``, live, until its ``exit`` event.

    ``live``: the run, counted as watched while the stream is open (each viewer sees a ``viewers``
    event when the count changes). ``owner``: watched while the run goes on; when it becomes
    unreachable (or reachable again) the stream says so at once, between two events.
    """
    held: list[Hold] = []
    watching: list[Callable[[], None]] = []
    watchers = owner.cluster.watchers if owner is not None else set()
    counted = live is not None and not live.finished

    async def tell_viewers() -> None:
        assert live is not None
        await hub.publish_json(topic, {"count": live.viewers}, event="viewers", ephemeral=True)

    def opened(sub: Subscription) -> None:
        hold = grants.hold(principal)
        held.append(hold)
        hold.on_end(lambda: sub.close("revoked"))
        if hold.reason is not None:
            sub.close("revoked")  # it ended while we subscribed: what is kept, then the end
        if owner is not None:

            def wake() -> None:
                if owner.moved():
                    sub.push(owner.event())

            watching.append(wake)
            watchers.add(wake)
            wake()
        if counted:
            assert live is not None
            live.viewers += 1

    async def first() -> bytes:
        # After opened(): every viewer, this one included, sees the count that includes it.
        if counted:
            await tell_viewers()
        return prelude

    async def closed() -> None:
        for hold in held:
            hold.release()
        for wake in watching:
            watchers.discard(wake)
        if counted and held:
            assert live is not None
            live.viewers -= 1
            if not live.finished:
                await tell_viewers()

    def farewell(sub: Subscription) -> bytes | None:
        if sub.ended_reason == "revoked" and held:
            return held[0].farewell()
        return None

    return sse_response(
        hub, topic, last_id=start, prelude=first, until=EXIT, on_open=opened, on_close=closed, farewell=farewell
    )
