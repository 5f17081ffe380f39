"""The one sampler task of the app: a psutil pass per interval, whatever the number of viewers.

Each pass runs in a worker thread (``asyncio.to_thread``) so the event loop never blocks on
``/proc``. The frame is published once as an ephemeral ``metrics`` event (the hub encodes it once
for every viewer), kept as the latest state for new viewers, folded into a bounded history, and
fed to the alert rules, whose ``alert``/``resolved`` events are stored with ids (replayed on resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any

from shared.backends.base import BackendUnavailable
from shared.encoding import encode
from shared.hub import Hub

from .alerts import METRICS, AlertEngine, Rule
from .probe import Probe

__all__ = ["MAX_INTERVAL", "MIN_INTERVAL", "TOPIC", "Sampler", "check_interval", "end_task"]

log = logging.getLogger(__name__)

TOPIC = "dashboard"  # the default; an app's sampler publishes on its host's topic (hosts.host_topic)
MIN_INTERVAL, MAX_INTERVAL = 0.25, 60.0


def check_interval(seconds: Any) -> float:
    """The interval as a float; ``ValueError`` (with the allowed range) otherwise."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds != seconds:
        raise ValueError(f"the interval must be a number of seconds from {MIN_INTERVAL:g} to {MAX_INTERVAL:g}")
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise ValueError(f"the interval must be from {MIN_INTERVAL:g} to {MAX_INTERVAL:g} seconds, not {seconds:g}")
    return float(seconds)


def _point(frame: dict[str, Any]) -> dict[str, float]:
    """The few numbers the charts plot, per frame: the history keeps only these."""
    return {
        "t": frame["t"],
        "cpu": frame["cpu"]["total"],
        "mem": frame["mem"]["percent"],
        "swap": frame["swap"]["percent"],
        "load": frame["load"][0],
        "rx": frame["net_rate"]["rx_bps"],
        "tx": frame["net_rate"]["tx_bps"],
        "rd": frame["disk_rate"]["read_bps"],
        "wr": frame["disk_rate"]["write_bps"],
    }


class Sampler:
    """Owns the probe, the latest frame, the history and the alert rules; ``start()``/``stop()``."""

    def __init__(
        self,
        hub: Hub,
        *,
        interval: float = 1.0,
        history_seconds: float = 300.0,
        process_limit: int = 300,
        rules: list[Rule] | None = None,
        topic: str = TOPIC,
    ) -> None:
        self.hub = hub
        self.topic = topic
        self.interval = check_interval(interval)
        self.paused = False
        self.history_seconds = history_seconds
        self.probe = Probe(process_limit=process_limit)
        self.alerts = AlertEngine(rules) if rules is not None else AlertEngine()
        self.latest: dict[str, Any] | None = None
        self.seq = 0
        self.settings_version = 1
        # At the shortest interval the window holds history_seconds / MIN_INTERVAL points; at longer
        # intervals the time trim in _remember() keeps it to the same five minutes.
        self.history: deque[dict[str, float]] = deque(maxlen=int(history_seconds / MIN_INTERVAL) + 1)
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=50)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._prelude: tuple[tuple[int, int, int], bytes] | None = None
        self._alerts_version = 0
        # Alert transitions not yet published (the backend was unavailable): sent first at the
        # next pass that can publish, so a viewer never misses an alert firing during an outage.
        self._unsent: deque[tuple[str, dict[str, Any]]] = deque(maxlen=100)
        self._outage_since: float | None = None
        self._publishing = asyncio.Lock()  # set_rules() and a pass may publish at once: once each

    # -- lifetime -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        if self._task is not None:
            return
        # The priming pass: rates and percentages need a previous reading to compare with.
        await asyncio.to_thread(self.probe.sample)
        self._task = asyncio.create_task(self._run(), name="dashboard-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await end_task(task, self._wake)

    # -- settings -----------------------------------------------------------------------------

    def set_interval(self, seconds: float) -> None:
        self.interval = check_interval(seconds)
        self._changed()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self._changed()

    async def set_rules(self, rules: list[Rule]) -> None:
        self._unsent.extend(self.alerts.set_rules(rules, time.time()))
        self._changed()
        await self._publish_alerts()

    def _changed(self) -> None:
        self.settings_version += 1
        self._wake.set()  # apply at once, not after the old (maybe 60 s) interval

    def settings(self) -> dict[str, Any]:
        return {
            "version": self.settings_version,
            "interval": self.interval,
            "paused": self.paused,
            "rules": [r.as_dict() for r in self.alerts.rules],
            "history_seconds": self.history_seconds,
            "limits": {"interval": [MIN_INTERVAL, MAX_INTERVAL]},
            "metrics": {k: {"label": v[0], "unit": v[1], "max": v[2]} for k, v in METRICS.items()},
        }

    # -- what viewers get ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "metrics": self.latest,
            "settings": self.settings(),
            "alerts": {"active": self.alerts.active(), "recent": list(self.recent_alerts)},
        }

    def history_json(self) -> dict[str, Any]:
        return {"interval": self.interval, "seconds": self.history_seconds, "points": list(self.history)}

    async def prelude(self) -> bytes:
        """``snapshot`` then ``history``: encoded once per state change, however many viewers connect."""
        key = (self.seq, self.settings_version, self._alerts_version)
        if self._prelude is None or self._prelude[0] != key:
            body = encode(_dumps(self.snapshot()), event="snapshot") + encode(
                _dumps(self.history_json()), event="history"
            )
            self._prelude = (key, body)
        return self._prelude[1]

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        while self._task is not None:  # not "while True": see end_task()
            self._wake.clear()
            if self.paused:
                await self._wake.wait()
                if not self.paused:
                    # Prime again, so the first frame after a pause is not an average over the pause.
                    await asyncio.to_thread(self.probe.sample)
                    began = loop.time()
                continue
            delay = began + self.interval - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                    continue  # settings changed: recompute the deadline with the new interval
            began = loop.time()
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except BackendUnavailable as exc:
                # Expected during a Redis restart or a Sentinel failover: one line when it starts,
                # one when it is over; not a traceback every second.
                if self._outage_since is None:
                    self._outage_since = loop.time()
                    log.warning("dashboard: %s; sampling goes on, viewers resume when it is back", exc)
                continue
            except Exception:
                log.exception("dashboard sampling pass failed; trying again at the next interval")
                continue
            if self._outage_since is not None:
                log.warning("dashboard: publishing metrics again after %.1f s", loop.time() - self._outage_since)
                self._outage_since = None

    async def _tick(self) -> None:
        frame = await asyncio.to_thread(self.probe.sample)
        self.seq += 1
        frame["seq"] = self.seq
        frame["interval"] = self.interval
        self.latest = frame
        self._remember(_point(frame))
        self._unsent.extend(self.alerts.evaluate(frame))
        await self.hub.publish_json(self.topic, frame, event="metrics", ephemeral=True)
        await self._publish_alerts()

    def _remember(self, point: dict[str, float]) -> None:
        self.history.append(point)
        cutoff = point["t"] - self.history_seconds
        while self.history and self.history[0]["t"] < cutoff:
            self.history.popleft()

    async def _publish_alerts(self) -> None:
        async with self._publishing:
            while self._unsent:
                name, payload = self._unsent[0]
                event_id = await self.hub.publish_json(self.topic, payload, event=name)
                self._unsent.popleft()
                self.recent_alerts.appendleft({**payload, "event_id": event_id})
                self._alerts_version += 1


async def end_task(task: asyncio.Task[None], wake: asyncio.Event, grace: float = 5.0) -> None:
    """Cancel a loop task and wait (boundedly) for it to end. A client library may turn the
    cancellation into its own error (redis-py can, mid-command), which the loop logs and survives:
    so the loops also check a flag (``stop()`` clears their task first), and the wait is bounded."""
    task.cancel()
    wake.set()
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        log.warning("%s did not end within %g s of being cancelled", task.get_name(), grace)
    elif not task.cancelled() and task.exception() is not None:
        log.warning("%s ended with %r", task.get_name(), task.exception())


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
