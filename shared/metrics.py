"""Prometheus metrics at ``GET /metrics`` (issue 19), through ``prometheus-client``.

Read at scrape time from what the process already counts, so serving them costs nothing per
event: the hubs' :class:`shared.hub.HubCounts` and open topics, each write watchdog's stuck-stream
count, and the apps' own counters (:func:`count`: chat messages, exec runs, dashboard actions).
Labels are kinds, never names: a topic's class (``room``, ``exec``, ``rpc``), a reset's reason, an
action; no per-user, per-room or per-run label.

Off unless the operator gives a token (``--metrics-token`` or ``$SSE_METRICS_TOKEN``): then a
scrape must send ``Authorization: Bearer <token>``. Without one ``/metrics`` answers 404 saying
how to turn it on. With ``--workers N`` each scrape is answered by one worker, with its own counts
(the ``instance`` label tells them apart).
"""

from __future__ import annotations

import os
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from litestar import Request, Response, get
from litestar.exceptions import NotAuthorizedException, NotFoundException
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .backends.base import LATENCY_BUCKETS
from .errors import errors
from .security import bearer, tokens_equal

__all__ = ["METRICS_TOKEN_ENV", "Metrics", "count", "metrics_route"]

METRICS_TOKEN_ENV = "SSE_METRICS_TOKEN"
METRICS = "sse.metrics"  # its key in the lifespan state

# The apps' counters: (metric, label name, label value) -> n. One process-wide table: an app
# counts what it did without knowing whether a server (or which) will export it.
_APP_COUNTS: Counter[tuple[str, str, str]] = Counter()
_APP_HELP = {
    "chat_messages": "Chat messages stored (kind: text or file; a resend of one already stored is not counted)",
    "exec_runs": "Exec runs asked for (outcome: started, refused by the policy, failed to start)",
    "dashboard_actions": "Dashboard process actions (result: succeeded, failed, refused, ...)",
    "sse_requests": "Server-to-client requests (JSON-RPC over SSE + POST) closed, by outcome",
}
# Every correlator's table of requests waiting for an answer (weakly: a test's come and go).
_PENDING: weakref.WeakSet[Any] = weakref.WeakSet()


class PendingTable(dict):  # type: ignore[type-arg]
    """A dict a WeakSet can hold (plain dicts cannot be weakly referenced; by identity)."""

    __hash__ = object.__hash__  # type: ignore[assignment]


def track_pending(table: dict[str, Any]) -> None:
    """Export ``len(table)`` as ``sse_requests_pending`` (summed over every correlator)."""
    _PENDING.add(table)


def count(metric: str, label: str, value: str, n: int = 1) -> None:
    """Count one of an app's events: ``count("exec_runs", "outcome", "started")``."""
    _APP_COUNTS[(metric, label, value[:32])] += n


class _Collector:
    def __init__(self, hubs: Callable[[], Iterable[Any]], instance: str) -> None:
        self._hubs = hubs
        self._instance = instance

    def collect(self) -> Iterator[Metric]:
        inst = self._instance
        streams = GaugeMetricFamily(
            "sse_streams_open", "Open SSE streams, by topic class", labels=["instance", "topic_class"]
        )
        published = CounterMetricFamily(
            "sse_events_published",
            "Events published through a hub, by topic class and kind",
            labels=["instance", "topic_class", "kind"],
        )
        delivered = CounterMetricFamily(
            "sse_entries_delivered",
            "Entries (events and heartbeats) written to subscribers, by topic class",
            labels=["instance", "topic_class"],
        )
        resets = CounterMetricFamily("sse_resets", "Reset events sent, by reason", labels=["instance", "reason"])
        ended = CounterMetricFamily(
            "sse_subscribers_ended",
            "Streams the server ended for a client that fell behind",
            labels=["instance", "reason"],
        )
        totals: dict[str, Counter[Any]] = {"streams": Counter(), "published": Counter(), "delivered": Counter()}
        resets_by: Counter[str] = Counter()
        slow = stuck = 0
        seen: set[int] = set()
        mux_topics = GaugeMetricFamily(
            "sse_mux_topics_open", "Topics carried by open multiplexed streams (/sse/mux)", labels=["instance"]
        )
        topics = 0
        for hub in self._hubs():
            mux = getattr(hub, "mux_stats", None)
            if callable(mux) and id(hub) not in seen:
                # The shared connection (shared.mux): one stream of class "mux"; its topics are
                # counted again by their apps' hubs, under their own classes, as plain streams are.
                seen.add(id(hub))
                stats = mux()
                totals["streams"]["mux"] += stats["streams"]
                topics += stats["topics"]
                continue
            if id(hub) in seen or not hasattr(hub, "counts"):
                continue
            seen.add(id(hub))
            open_, done = hub.live_counts()
            totals["streams"].update(open_)
            totals["delivered"].update(done)
            totals["published"].update(hub.counts.published)
            resets_by.update(hub.counts.resets)
            slow += hub.counts.ended_slow
            stuck += hub.watchdog.ended
        for cls, n in sorted(totals["streams"].items()):
            streams.add_metric([inst, cls], n)
        for (cls, kind), n in sorted(totals["published"].items()):
            published.add_metric([inst, cls, kind], n)
        for cls, n in sorted(totals["delivered"].items()):
            delivered.add_metric([inst, cls], n)
        for reason, n in sorted(resets_by.items()):
            resets.add_metric([inst, reason], n)
        ended.add_metric([inst, "slow"], slow)  # fell out of the replay window
        ended.add_metric([inst, "stuck"], stuck)  # a write blocked past the watchdog's timeout
        pending = GaugeMetricFamily(
            "sse_requests_pending", "Server-to-client requests waiting for their answer", labels=["instance"]
        )
        pending.add_metric([inst], sum(len(t) for t in list(_PENDING)))
        mux_topics.add_metric([inst], topics)
        yield from (streams, published, delivered, resets, ended, pending, mux_topics)
        yield from self._backend_metrics(inst)
        families: dict[str, CounterMetricFamily] = {}
        for (metric, label, value), n in sorted(_APP_COUNTS.items()):
            family = families.get(metric)
            if family is None:
                family = families[metric] = CounterMetricFamily(
                    metric, _APP_HELP.get(metric, metric), labels=["instance", label]
                )
            family.add_metric([inst, value], n)
        yield from families.values()

    def _backend_metrics(self, inst: str) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "sse_backend_calls",
            "Calls to a networked backend (Redis), by operation and outcome (error: unreachable or refused)",
            labels=["instance", "backend", "op", "outcome"],
        )
        latency = HistogramMetricFamily(
            "sse_backend_seconds", "Latency of calls to a networked backend", labels=["instance", "backend", "op"]
        )
        # Summed over the backends of every app (each has its own connection pool to one Redis).
        all_calls: Counter[tuple[str, str, str]] = Counter()
        all_buckets: dict[tuple[str, str], list[int]] = {}
        all_seconds: Counter[tuple[str, str]] = Counter()
        seen: set[int] = set()
        for hub in self._hubs():
            stats = getattr(getattr(hub, "backend", None), "stats", None)
            if stats is None or id(stats) in seen:
                continue
            seen.add(id(stats))
            kind = type(hub.backend).__name__.removesuffix("Backend").lower()
            for (op, outcome), n in stats.calls.items():
                all_calls[(kind, op, outcome)] += n
            for op, counts in stats.buckets.items():
                total = all_buckets.setdefault((kind, op), [0] * len(counts))
                for i, n in enumerate(counts):
                    total[i] += n
                all_seconds[(kind, op)] += stats.seconds.get(op, 0.0)
        for (kind, op, outcome), n in sorted(all_calls.items()):
            calls.add_metric([inst, kind, op, outcome], n)
        for (kind, op), counts in sorted(all_buckets.items()):
            running, buckets = 0, []
            for bound, n in zip([*map(str, LATENCY_BUCKETS), "+Inf"], counts, strict=True):
                running += n
                buckets.append((bound, running))
            latency.add_metric([inst, kind, op], buckets, sum_value=all_seconds[(kind, op)])
        yield from (calls, latency)


class Metrics:
    """The registry one server exports: the SSE collector and the process's CPU and memory."""

    def __init__(self, hubs: Callable[[], Iterable[Any]], token: str | None) -> None:
        self.token = token or None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(hubs, f"{os.uname().nodename}:{os.getpid()}"))  # type: ignore[arg-type]
        self.registry.register(ProcessCollector(registry=None))

    def render(self) -> bytes:
        return generate_latest(self.registry)


@get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics (needs the metrics token)",
    description="Text exposition format. Off unless the server was started with --metrics-token "
    "(or $SSE_METRICS_TOKEN); then send 'Authorization: Bearer <token>'.",
    raises=errors(401, 404),
    media_type=CONTENT_TYPE_LATEST,
)
async def metrics_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    metrics = (request.scope.get("state") or {}).get(METRICS)
    if not isinstance(metrics, Metrics) or metrics.token is None:
        raise NotFoundException(
            f"metrics are off: start the server with --metrics-token (or ${METRICS_TOKEN_ENV}) to serve them"
        )
    auth = request.headers.get("authorization", "")
    if not tokens_equal(bearer(auth), metrics.token):
        raise NotAuthorizedException(
            "metrics need 'Authorization: Bearer <the metrics token>'", headers={"WWW-Authenticate": "Bearer"}
        )
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
