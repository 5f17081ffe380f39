"""Issue 19: ``/metrics`` on the product as users run it, parsed with ``prometheus_client``'s own
parser: the counters move exactly as this test's traffic says; off without a token, 401 with a
wrong one; no label that names a user, room or run."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.client import Backoff, Responder
from tests.rig import RedisServer, free_port, wait_until

from .rig import EXEC_TOKEN, Product, open_streams, wait_body

pytestmark = pytest.mark.slow

METRICS_TOKEN = "product-metrics-token-0123456789"
SCRAPE = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def scrape(product: Product) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(product.url + "/metrics", headers=SCRAPE, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "instance"))
            out[(s.name, labels)] = s.value
    return out


def value(m: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return float(m.get((name, tuple(sorted(labels.items()))), 0.0))


async def test_metrics_move_with_the_traffic(tmp_path: Path) -> None:
    product = Product(tmp_path, "--metrics-token", METRICS_TOKEN).start()
    try:
        async with httpx.AsyncClient(base_url=product.url, timeout=10) as http:
            assert (await http.get("/metrics")).status_code == 401
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert wrong.headers["content-type"].startswith("application/json")
            before = scrape(product)
            streams = await open_streams(product.port, [("/basics/events", {})] * 7)
            for s in streams:
                await wait_body(s, b"event: tick")
            opened = scrape(product)
            assert value(opened, "sse_streams_open", topic_class="ticks") == 7
            assert value(opened, "sse_entries_delivered_total", topic_class="ticks") > value(
                before, "sse_entries_delivered_total", topic_class="ticks"
            )
            # Chat: 3 messages, one sent twice with the same client_msg_id (counted once).
            assert (await http.post("/chat/session", json={"name": "metrics"})).status_code == 200
            for i in (1, 2, 3, 3):
                r = await http.post("/chat/rooms/general/messages", json={"text": f"m{i}", "client_msg_id": f"c{i}"})
                assert r.status_code in (200, 201), r.text
            # Exec: one run started, one refused by the default policy.
            auth = {"Authorization": f"Bearer {EXEC_TOKEN}"}
            assert (await http.post("/exec/runs", json={"argv": ["echo", "hi"]}, headers=auth)).status_code == 201
            assert (
                await http.post("/exec/runs", json={"argv": ["cat", "/etc/shadow"]}, headers=auth)
            ).status_code == 403
            # Two server-to-client requests through /bidi/, answered by a real Responder.
            responder = Responder(product.url + "/bidi/events", client_id="metrics-worker", backoff=Backoff(retry=0.05))
            responder.register("add", lambda p: p["a"] + p["b"])
            async with responder:
                for _ in range(2):
                    body = {"client_id": "metrics-worker", "method": "add", "params": {"a": 1, "b": 2}}
                    assert (await http.post("/bidi/trigger", json=body)).json()["result"] == 3
            # A resume from an id this server never gave: one reset.
            reset = await open_streams(product.port, [("/basics/events", {"Last-Event-ID": "zzzzzz-1"})])
            await wait_body(reset[0], b"event: reset")
            after = scrape(product)
            await asyncio.gather(*(s.close() for s in streams + reset))
        assert value(after, "chat_messages_total", kind="text") - value(before, "chat_messages_total", kind="text") == 3
        assert (
            value(after, "exec_runs_total", outcome="started") - value(before, "exec_runs_total", outcome="started")
            == 1
        )
        assert (
            value(after, "exec_runs_total", outcome="refused") - value(before, "exec_runs_total", outcome="refused")
            == 1
        )
        assert (
            value(after, "sse_resets_total", reason="foreign") - value(before, "sse_resets_total", reason="foreign")
            == 1
        )
        answered = value(after, "sse_requests_total", outcome="answered")
        assert answered - value(before, "sse_requests_total", outcome="answered") == 2
        assert value(after, "sse_requests_pending") == 0
        published = value(after, "sse_events_published_total", topic_class="ticks", kind="stored")
        assert published > value(before, "sse_events_published_total", topic_class="ticks", kind="stored")
        assert value(after, "sse_subscribers_ended_total", reason="slow") == 0
        assert value(after, "process_resident_memory_bytes") > 0
        # Kinds, never names: no label value is a room, user, run or client id.
        labels = {v for _, ls in after for _, v in ls}
        assert not labels & {"general", "metrics", "hi"}
        assert all(len(v) <= 32 for v in labels)
    finally:
        product.stop()


def test_metrics_are_off_without_a_token(tmp_path: Path) -> None:
    product = Product(tmp_path).start()
    try:
        r = httpx.get(product.url + "/metrics", headers=SCRAPE, timeout=10)
        assert r.status_code == 404
        assert "--metrics-token" in r.json()["detail"]
    finally:
        product.stop()


def test_backend_calls_errors_and_latency_on_redis(tmp_path: Path) -> None:
    redis = RedisServer()
    with redis.running():
        product = Product(tmp_path, "--backend", redis.url, "--metrics-token", METRICS_TOKEN).start()
        try:
            if True:  # the /basics/ ticker publishes once a second on its own
                wait_until(
                    lambda: (
                        value(scrape(product), "sse_backend_calls_total", backend="redis", op="append", outcome="ok")
                        > 0
                    ),
                    10,
                    "appends",
                )
                ok = scrape(product)
                redis.stop()
                # The ticker keeps publishing: its appends now fail (and are counted as errors).
                wait_until(
                    lambda: (
                        value(scrape(product), "sse_backend_calls_total", backend="redis", op="append", outcome="error")
                        > 0
                    ),
                    10,
                    "a failed append",
                )
                down = scrape(product)
                redis.start()
        finally:
            product.stop()
    # The histogram's count is every call of that op, ok or not; its buckets only grow.
    for m in (ok, down):
        calls = sum(
            value(m, "sse_backend_calls_total", backend="redis", op="append", outcome=o) for o in ("ok", "error")
        )
        assert value(m, "sse_backend_seconds_count", backend="redis", op="append") == calls
        assert value(m, "sse_backend_seconds_bucket", backend="redis", op="append", le="+Inf") == calls
        assert value(m, "sse_backend_seconds_sum", backend="redis", op="append") > 0
    assert value(down, "sse_backend_calls_total", backend="redis", op="append", outcome="ok") >= value(
        ok, "sse_backend_calls_total", backend="redis", op="append", outcome="ok"
    )


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


async def test_metrics_off_the_public_port(tmp_path: Path) -> None:
    """``--metrics-listen PORT``: /metrics on 127.0.0.1:PORT without a token, and not on the
    public port; with ``--workers 2`` worker i answers on PORT+i, each with its own counts."""
    redis = RedisServer()
    with redis.running():
        listen = free_port()
        while not _free(listen + 1):
            listen = free_port()
        product = Product(tmp_path, "--metrics-listen", str(listen), "--workers", "2", "--backend", redis.url).start(
            ready_path="/readyz"
        )
        try:
            # /readyz answered from one worker; the other may still be starting.
            wait_until(lambda: not _free(listen) and not _free(listen + 1), 30, "both workers' metrics listeners")
            async with httpx.AsyncClient(timeout=10) as http:
                public = await http.get(product.url + "/metrics")
                assert public.status_code == 404  # no token: the public route stays off
                instances = set()
                for port in (listen, listen + 1):
                    r = await http.get(f"http://127.0.0.1:{port}/metrics")
                    assert r.status_code == 200, r.text
                    assert r.headers["content-type"].startswith("text/plain")
                    families = _families(r.text)
                    assert {"sse_streams_open", "process_cpu_seconds"} <= set(families)
                    instances |= {labels["instance"] for labels, _ in families["sse_subscribers_ended"]}
                assert len(instances) == 2, instances  # two processes, each its own counts
                assert (await http.get(f"http://127.0.0.1:{listen}/other")).status_code == 404
                assert (await http.post(f"http://127.0.0.1:{listen}/metrics")).status_code == 405
        finally:
            product.stop()
        assert "Traceback" not in product.output()


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize(
    ("listen", "says"),
    [
        ("0.0.0.0:{port}", "not a loopback address"),
        ("{taken}", "is in use"),
        ("70000", "port from 1 to 65535"),
    ],
)
def test_metrics_listen_refuses_bad_addresses_in_one_line(tmp_path: Path, listen: str, says: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        arg = listen.format(port=free_port(), taken=taken.getsockname()[1])
        cmd = [sys.executable, "-m", "showcase", "--port", str(free_port()), "--data-dir", str(tmp_path)]
        run = subprocess.run([*cmd, "--metrics-listen", arg], capture_output=True, text=True, timeout=60)
    assert run.returncode in (1, 2), run.stderr  # 2: a bad argument; 1: refused like --host
    assert says in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
