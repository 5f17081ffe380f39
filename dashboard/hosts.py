"""Which hosts the dashboard can see, and which instance owns (samples and acts on) each one.

Every instance announces its host name through the router (``meta``). When several instances
claim the same name (``--workers 2`` on one machine), the one that started first owns it,
the instance id breaking a tie: every instance computes the same answer from the same peers, so
exactly one samples psutil and one acts on processes. A newcomer never takes a host over; the
next in line does when the owner goes away (a goodbye, or three missed beats).

Each host's frames and events are on its own topic, published by its owner only. This module
also remembers hosts that went away (so the page can show them as gone, and an action for one
is a clear 503 instead of a 404), and ends the streams of a host that went away with a ``gone``
event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from typing import Any

from litestar.exceptions import HTTPException, NotFoundException, ValidationException

from shared.backends.memory import MemoryBackend
from shared.hub import Hub, Subscription
from shared.routing import Peer, Router

from .sampler import Sampler, end_task

__all__ = ["Hosts", "check_host_name", "host_topic"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
REMEMBER_GONE = 100  # hosts that went away, kept to be shown as gone (oldest forgotten first)


def check_host_name(name: Any) -> str:
    """A host name as the dashboard uses it (topics, URLs); ``ValueError`` otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"host name {name!r} must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def host_topic(name: str) -> str:
    return f"dashboard:host:{name}"


def _rank(peer: Peer) -> tuple[float, str]:
    since = peer.meta.get("since")
    return (since if isinstance(since, int | float) else float("inf"), peer.instance)


class Hosts:
    """The host list and the election; ``start()`` after the router's, ``stop()`` before it."""

    def __init__(self, router: Router, sampler: Sampler, name: str) -> None:
        self.router = router
        self.sampler = sampler
        self.name = name
        self.hub: Hub = router.hub
        self._gone: OrderedDict[str, float] = OrderedDict()  # host -> when it was last seen (time.time())
        self._streams: dict[str, set[Subscription]] = {}
        self._seen: set[str] = set()  # live hosts at the last look (live())
        self._last_view: list[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._elections = 0

    # -- who owns what ------------------------------------------------------------------------

    def owners(self) -> dict[str, list[Peer]]:
        """Live hosts -> their instances, the owner first."""
        by_host: dict[str, list[Peer]] = {}
        for peer in self.router.peers().values():
            host = peer.meta.get("host")
            if isinstance(host, str):
                by_host.setdefault(host, []).append(peer)
        return {host: sorted(peers, key=_rank) for host, peers in sorted(by_host.items())}

    def live(self) -> dict[str, list[Peer]]:
        """:meth:`owners`, noting the hosts that went away since the last look."""
        live = self.owners()
        now = time.time()
        for host in self._seen - live.keys():
            self._gone[host] = now
            log.info("dashboard host %r went away", host)
        self._seen = set(live)
        for host in live:
            self._gone.pop(host, None)
        while len(self._gone) > REMEMBER_GONE:
            self._gone.popitem(last=False)
        return live

    def owner(self, host: str) -> str:
        """The instance that owns ``host``: 404 if never seen here, 503 if it went away."""
        peers = self.live().get(host)
        if peers:
            return peers[0].instance
        gone = self._gone.get(host)
        if gone is not None:
            raise HTTPException(
                status_code=503,
                detail=f"host {host!r} is gone: its dashboard has not been heard from since "
                f"{time.strftime('%H:%M:%S', time.localtime(gone))}; actions for it cannot be delivered",
                headers={"Retry-After": "5"},
            )
        raise NotFoundException(f"no host named {host!r}; the hosts are: {', '.join(self.owners()) or 'none'}")

    def owns(self, host: str) -> bool:
        peers = self.owners().get(host)
        return peers is not None and peers[0].instance == self.router.instance

    def resolve(self, host: str | None) -> str:
        """The host a request names (``?host=``; this instance's own host when absent)."""
        if host is None or host == "":
            return self.name
        try:
            return check_host_name(host)
        except ValueError as exc:
            raise ValidationException(str(exc)) from None

    def view(self) -> list[dict[str, Any]]:
        """Every host, live ones with their owner, and the ones that went away."""
        live = self.live()
        hosts: list[dict[str, Any]] = [
            {"name": host, "live": True, "owner": peers[0].instance, "instances": len(peers)}
            for host, peers in live.items()
        ]
        hosts += [
            {"name": host, "live": False, "gone_at": round(seen, 3)}
            for host, seen in self._gone.items()
            if host not in live
        ]
        return sorted(hosts, key=lambda h: h["name"])

    def info(self) -> dict[str, Any]:
        return {"self": self.name, "instance": self.router.instance, "hosts": self.view()}

    # -- streams of a host --------------------------------------------------------------------

    def stream_opened(self, host: str, sub: Subscription) -> None:
        self._streams.setdefault(host, set()).add(sub)

    def stream_closed(self, host: str, sub: Subscription) -> None:
        subs = self._streams.get(host)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._streams[host]

    # -- the election loop --------------------------------------------------------------------

    async def start(self) -> None:
        if not isinstance(self.hub.backend, MemoryBackend):
            # Hear the other instances' answers to our hello first, so a newcomer does not sample
            # (and publish) a host that another instance already owns, even for one frame.
            await asyncio.sleep(min(0.5, self.router.beat))
        await self.elect()
        self._task = asyncio.create_task(self._run(), name="dashboard-hosts")

    async def close(self) -> None:
        """:meth:`stop` (the name ``shared.server`` calls at shutdown)."""
        await self.stop()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await end_task(task, asyncio.Event())
        await self.sampler.stop()

    async def _run(self) -> None:
        while self._task is not None:  # not "while True": see sampler.end_task()
            await asyncio.sleep(min(0.5, self.router.beat / 2))
            try:
                await self.elect()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dashboard host election failed; trying again")

    async def elect(self) -> None:
        """Sample our host if we own it (and stop if not); note hosts that went away."""
        live = self.live()
        for host in list(self._streams):
            if host not in live:
                for sub in list(self._streams.get(host, ())):
                    sub.close("gone")
        mine = self.owns(self.name)
        if mine and not self.sampler.running:
            log.info("dashboard instance %s now samples host %r", self.router.instance, self.name)
            await self.sampler.start()
            if self._elections:
                await self._took_over()
        elif not mine and self.sampler.running:
            log.info("dashboard instance %s hands host %r over", self.router.instance, self.name)
            await self.sampler.stop()
        self._elections += 1
        view = self.view()
        if mine and view != self._last_view:
            self._last_view = view
            # The owner tells its host's viewers (on any instance) that the host list changed.
            with contextlib.suppress(Exception):
                await self.hub.publish_json(self.sampler.topic, {"hosts": view}, event="hosts", ephemeral=True)

    async def _took_over(self) -> None:
        """Tell the host's viewers that its settings are now this instance's (its own interval and
        rules): a settings version above any the previous owner could have reached."""
        s = self.sampler
        s.settings_version = max(s.settings_version + 1, int(time.time() * 1000))
        detail = f"host {self.name!r} is now sampled by instance {self.router.instance}"
        with contextlib.suppress(Exception):
            await self.hub.publish_json(
                s.topic, {**s.settings(), "by": f"instance {self.router.instance}", "detail": detail}, event="settings"
            )
