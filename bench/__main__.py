"""``python -m bench``: measure our hub against a naive baseline, in the same run.

    python -m bench            # the full run: table, bench/results/latest.json, bench/results/latest.png
    python -m bench --quick    # under a minute, for CI: exits 1 if any event is lost or reordered
    python -m bench mux        # one shared connection (/sse/mux) with 20 topics against 20 streams
    python -m bench peers      # ours beside a Go net/http server, sse-starlette and the naive baseline

Everything talks to 127.0.0.1 only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench import apps
from bench.load import worker
from bench.rpc import responder_worker, trigger_worker

RESULTS = Path(__file__).parent / "results"
SWEEP_RATE = 20.0  # publishes/s of the latency-against-subscribers runs


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVER_PIDS: dict[str, int] = {}  # url -> pid of the bench server serving it


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    import psutil

    cpu = psutil.Process(pid).cpu_times()
    return float(cpu.user + cpu.system)


@contextlib.contextmanager
def bench_server(impl: str, ready_path: str = "/stats", command: list[str] | None = None) -> Iterator[str]:
    """A bench server in a subprocess on a free port: ``bench.server --impl impl``, or ``command``
    (a peer from :mod:`bench.peers`, with ``{port}`` in it)."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.server", "--impl", impl, "--port", "{port}"] if command is None else command
    # Its stderr goes to a file, not a pipe nobody reads: a server that logs a lot (thousands of
    # disconnects at the end of a run) would block on a full pipe.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [a.replace("{port}", str(port)) for a in argv],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        url = f"http://127.0.0.1:{port}"
        SERVER_PIDS[url] = proc.pid
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(url + ready_path, timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        log.seek(0)
                        tail = log.read()[-2000:].decode(errors="replace")
                        raise RuntimeError(f"bench server ({impl}) did not start: {tail}") from None
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def stats(url: str) -> dict[str, Any]:
    return httpx.get(url + "/stats", timeout=10).json()  # type: ignore[no-any-return]


class Clients:
    """Worker processes holding ``total`` SSE connections between them."""

    def __init__(
        self,
        url: str,
        total: int,
        want: int,
        *,
        timeout: float,
        keep_latency: bool = False,
        workers: int = 2,
        headers: dict[str, str] | None = None,
        strict: bool = True,
    ) -> None:
        port = int(url.rsplit(":", 1)[1])
        ctx = mp.get_context("fork")
        self.pipes = []
        self.procs = []
        self.timeout = timeout
        shares = [total // workers + (1 if i < total % workers else 0) for i in range(workers)]
        for share in shares:
            if share == 0:
                continue
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=worker,
                args=(child, "127.0.0.1", port, share, want, timeout, keep_latency),
                kwargs={"headers": headers, "strict": strict},
                daemon=True,
            )
            p.start()
            self.pipes.append(parent)
            self.procs.append(p)
        self.ready = [pipe.recv() for pipe in self.pipes]

    @property
    def connected(self) -> int:
        return sum(r["ready"] for r in self.ready)

    def go(self, first: int | None = None) -> None:
        """Start reading (before anything is published, so latency is not spent in socket buffers).
        ``first``: the seq the first event will have, so that losing it counts as a gap."""
        deadline = time.time() + self.timeout
        for pipe in self.pipes:
            pipe.send({"go": deadline, "first": first})

    def results(self) -> list[dict[str, Any]]:
        out = [pipe.recv() for pipe in self.pipes]
        self.join()
        return out

    def release(self) -> list[dict[str, Any]]:
        for pipe in self.pipes:
            pipe.send({"stop": True})
        out = [pipe.recv() for pipe in self.pipes]
        self.join()
        return out

    def join(self) -> None:
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()


def wait_subscribers(url: str, n: int, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while stats(url)["subscribers"] < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {stats(url)['subscribers']} of {n} subscribers registered")
        time.sleep(0.05)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "connections": sum(r["connections"] for r in results),
        "received": sum(r["received"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "short": sum(r["short"] for r in results),
        "gaps": sum(r.get("gaps", 0) for r in results),
        "dups": sum(r.get("dups", 0) for r in results),
        "reorders": sum(r.get("reorders", 0) for r in results),
        "late": sum(r.get("late", 0) for r in results),
        "ended_early": sum(r["ended_early"] for r in results),
        "last_at": max(r["last_at"] for r in results),
        "client_cpu_s": sum(r["cpu_s"] for r in results),
        "client_check_cpu_s": sum(r.get("check_cpu_s", 0.0) for r in results),
        "latencies": [x for r in results for x in r["latencies"]],
        "sent": [x for r in results for x in r.get("sent", [])],
    }


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


# -- scenarios ----------------------------------------------------------------------------------


def burst(impl: str, subscribers: int, events: int, timeout: float = 60, strict: bool = False) -> dict[str, Any]:
    """Deliveries per second: ``events`` 200-byte events published at once to ``subscribers``."""
    with bench_server(impl) as url:
        clients = Clients(url, subscribers, events, timeout=timeout, strict=strict)
        wait_subscribers(url, clients.connected)
        cpu0 = stats(url)["cpu_s"]
        clients.go()
        time.sleep(0.2)  # the workers are in their read loops
        began = time.time()
        httpx.post(url + "/publish", json={"n": events, "size": 200}, timeout=timeout)
        res = merge(clients.results())
        cpu1 = stats(url)["cpu_s"]
    elapsed = max(1e-9, res["last_at"] - began)
    expected = clients.connected * events
    return {
        "scenario": "burst",
        "impl": impl,
        "subscribers": subscribers,
        "events": events,
        "deliveries": res["received"],
        "expected": expected,
        "lost": expected - res["received"],
        "order_errors": res["errors"],
        "seconds": round(elapsed, 3),
        "deliveries_per_s": round(res["received"] / elapsed),
        "server_cpu_s": round(cpu1 - cpu0, 2),
        # What the server could do with a core of its own: on 2 cores the clients compete with it.
        "per_server_cpu_s": round(res["received"] / max(1e-3, cpu1 - cpu0)),
        "client_cpu_s": round(res["client_cpu_s"], 2),
    }


def paced(impl: str, subscribers: int, rate: float, seconds: float) -> dict[str, Any]:
    """Publish-to-receive latency at a steady rate."""
    n = int(rate * seconds)
    with bench_server(impl) as url:
        clients = Clients(
            url, subscribers, n, timeout=seconds * 10 + 60, keep_latency=True
        )  # a backlog shows as latency
        wait_subscribers(url, clients.connected)
        s0 = stats(url)
        cpu0 = s0["cpu_s"]
        clients.go()
        time.sleep(0.2)
        began = time.monotonic()
        httpx.post(url + "/publish", json={"n": n, "size": 200, "rate": rate}, timeout=seconds * 10 + 60)
        publish_s = time.monotonic() - began
        res = merge(clients.results())
        s1 = stats(url)
        cpu1 = s1["cpu_s"]
    lat = [x * 1000 for x in res["latencies"]]
    # Backlog: does latency grow over the run? Compare the events published in the last tenth of
    # the run with those of the first tenth (by publish time, not by connection).
    by_time = [x for _, x in sorted(zip(res["sent"], lat, strict=True))]
    tenth = max(1, len(by_time) // 10)
    expected = clients.connected * n
    return {
        "scenario": "paced",
        "impl": impl,
        "subscribers": subscribers,
        "rate": rate,
        "events": n,
        "lost": expected - res["received"],
        "order_errors": res["errors"],
        "p50_ms": round(pct(lat, 50), 2),
        "p99_ms": round(pct(lat, 99), 2),
        "max_ms": round(max(lat or [0]), 2),
        "first_tenth_p50_ms": round(statistics.median(by_time[:tenth]), 2) if lat else None,
        "last_tenth_p50_ms": round(statistics.median(by_time[-tenth:]), 2) if lat else None,
        # The publisher runs in the server's loop: longer than ``seconds`` means it fell behind.
        "publish_s": round(publish_s, 2),
        # The server's garbage collections during the run (young, middle, full).
        "server_gcs": [b - a for a, b in zip(s0["gc_collections"], s1["gc_collections"], strict=True)],
        "server_cpu_s": round(cpu1 - cpu0, 2),
        # The clients' CPU while reading; parsing and checking every event ran after the run.
        "client_cpu_s": round(res["client_cpu_s"], 2),
        "client_check_cpu_s": round(res["client_check_cpu_s"], 2),
    }


def idle_cost(impl: str, connections: int) -> dict[str, Any]:
    """RSS growth per idle connection and server CPU per connect."""
    with bench_server(impl) as url:
        # Warm up code paths so first-use allocations are not charged to connections.
        warm = Clients(url, 20, 0, timeout=5, workers=1)
        wait_subscribers(url, warm.connected)
        warm.release()
        time.sleep(0.5)
        before = stats(url)
        clients = Clients(url, connections, 0, timeout=30)
        wait_subscribers(url, clients.connected)
        time.sleep(0.5)
        after = stats(url)
        clients.release()
    n = clients.connected
    return {
        "scenario": "idle",
        "impl": impl,
        "connections": n,
        "rss_per_conn_kib": round((after["rss"] - before["rss"]) / n / 1024, 2),
        "cpu_per_connect_ms": round((after["cpu_s"] - before["cpu_s"]) / n * 1000, 3),
    }


def reconnect_storm(clients_n: int, missed: int) -> dict[str, Any]:
    """``clients_n`` clients resume with a Last-Event-ID ``missed`` events back, all at once."""
    with bench_server("hub") as url:
        first = Clients(url, 1, 1, timeout=30, workers=1)
        wait_subscribers(url, 1)
        first.go()
        time.sleep(0.2)
        httpx.post(url + "/publish", json={"n": 1, "size": 200}, timeout=30)
        res = first.results()
        resume_id = res[0]["last_ids"][0]
        httpx.post(url + "/publish", json={"n": missed, "size": 200}, timeout=30)
        cpu0 = stats(url)["cpu_s"]
        began = time.time()
        storm = Clients(url, clients_n, missed, timeout=60, headers={"Last-Event-ID": resume_id})
        storm.go()
        out = merge(storm.results())
        cpu1 = stats(url)["cpu_s"]
    return {
        "scenario": "reconnect_storm",
        "impl": "hub",
        "clients": clients_n,
        "missed": missed,
        "lost": storm.connected * missed - out["received"],
        "order_errors": out["errors"],
        "seconds": round(out["last_at"] - began, 3),
        "server_cpu_s": round(cpu1 - cpu0, 2),
    }


def correlation(clients_n: int, seconds: float, concurrency: int, rate: float | None, via: str) -> dict[str, Any]:
    """SSE request -> POST answer round trips to ``clients_n`` clients of the ``/bidi/`` demo.

    ``via="server"``: the server makes the requests itself (``POST /bench/requests``), as the apps
    do; a round trip is one SSE write and one POST. ``via="trigger"``: a client process asks for
    each one with ``POST /bidi/trigger`` and waits for the answer: a second HTTP request per round
    trip, and the figure a user of that endpoint gets.
    """
    ctx = mp.get_context("fork")
    ids = [f"bench{i}" for i in range(clients_n)]
    with bench_server("bidi", "/bidi/clients") as url:
        port = int(url.rsplit(":", 1)[1])
        rpipe, rchild = ctx.Pipe()
        responder = ctx.Process(target=responder_worker, args=(rchild, port, ids), daemon=True)
        responder.start()
        sessions = rpipe.recv()["sessions"]
        server_cpu0 = process_cpu(SERVER_PIDS[url])
        trig = None
        if via == "server":
            body = {"client_ids": ids, "seconds": seconds, "concurrency": concurrency, "rate": rate}
            out = httpx.post(url + "/bench/requests", json=body, timeout=seconds + 60).raise_for_status().json()
            out["cpu_s"] = 0.0
        else:
            tpipe, tchild = ctx.Pipe()
            trig = ctx.Process(target=trigger_worker, args=(tchild, port, ids, concurrency, seconds, rate), daemon=True)
            trig.start()
            if not tpipe.poll(seconds + 120):
                raise RuntimeError("the trigger process did not report")
            out = tpipe.recv()
        server_cpu = process_cpu(SERVER_PIDS[url]) - server_cpu0
        rpipe.send("stop")
        answered = rpipe.recv()
        if trig is not None:
            trig.join(10)
        responder.join(10)
    rtts = [x * 1000 for x in out["rtts"]]
    return {
        "scenario": "correlation",
        "impl": "hub",
        "via": via,
        "clients": sessions,
        "concurrency": concurrency,
        "rate": rate,
        "round_trips": len(rtts),
        "errors": len(out["errors"]),
        "round_trips_per_s": round(len(rtts) / out["seconds"]),
        "p50_ms": round(pct(rtts, 50), 2),
        "p99_ms": round(pct(rtts, 99), 2),
        "answers_posted": answered["answered"],
        "server_cpu_s": round(server_cpu, 2),
        # The trigger process and the responders (all the answering clients), each for the whole run.
        "client_cpu_s": round(out["cpu_s"] + answered["cpu_s"], 2),
    }


# -- reporting ----------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r.get(k, "")).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def chart(bursts: list[dict[str, Any]], pace: list[dict[str, Any]], path: Path) -> None:
    """Two panels against the number of subscribers, ours beside the baseline: burst deliveries/s,
    and p99 latency at a steady 20 publishes/s."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no chart: pip install matplotlib to draw bench/results/latest.png)")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sweep = [r for r in pace if r["rate"] == SWEEP_RATE]
    for impl, style, label in (("hub", "o-", "ours (hub)"), ("naive", "s--", "naive baseline")):
        rows = sorted((r for r in bursts if r["impl"] == impl), key=lambda r: r["subscribers"])
        axes[0].plot([r["subscribers"] for r in rows], [r["deliveries_per_s"] for r in rows], style, label=label)
        prow = sorted((r for r in sweep if r["impl"] == impl), key=lambda r: r["subscribers"])
        axes[1].plot([r["subscribers"] for r in prow], [r["p99_ms"] for r in prow], style, label=label)
    axes[0].set(xscale="log", xlabel="subscribers", ylabel="deliveries/s", title="Burst fan-out (200-byte events)")
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="subscribers",
        ylabel="p99 latency (ms)",
        title=f"Latency at {SWEEP_RATE:g} publishes/s",
    )
    axes[1].axhline(50, color="grey", linewidth=0.8, linestyle=":", label="target at 1,000: 50 ms")
    axes[0].yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k"))
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"chart: {path}")


def main() -> int:
    if sys.argv[1:2] == ["mux"]:  # `python -m bench mux`: the shared connection vs plain streams
        from bench import mux

        return mux.main(sys.argv[2:])
    if sys.argv[1:2] == ["peers"]:  # `python -m bench peers`: ours beside Go, sse-starlette, naive
        from bench.peers import compare

        return compare.main(sys.argv[2:])
    parser = argparse.ArgumentParser(prog="bench", description="SSE hub vs a naive baseline, on loopback.")
    parser.add_argument("--quick", action="store_true", help="small run for CI (< 1 min); fails on any loss")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    if args.quick:
        plan_burst = [(100, 500)]  # checked event by event (strict) in quick mode
        plan_paced = [(200, 50.0, 2.0)]
        idle_n, storm = 200, (100, 50)
        plan_rpc: list[tuple[int, float, int, float | None, str]] = [(20, 2.0, 16, None, "server")]
        plan_rpc += [(20, 2.0, 16, None, "trigger")]
    else:
        plan_burst = [(10, 20_000), (100, 5_000), (1_000, 1_000), (5_000, 200)]
        # p99 against subscribers at a steady rate (the chart), then the sustained 100/s run.
        plan_paced = [(10, SWEEP_RATE, 5.0), (100, SWEEP_RATE, 5.0), (1_000, SWEEP_RATE, 10.0)]
        plan_paced += [(5_000, SWEEP_RATE, 5.0), (1_000, 100.0, 10.0)]
        idle_n, storm = 2_000, (1_000, 100)
        plan_rpc = [(100, 8.0, 128, None, via) for via in ("server", "trigger")]
        plan_rpc += [(100, 8.0, 256, 1000.0, via) for via in ("server", "trigger")]

    bursts = []
    for subs, events in plan_burst:
        for impl in ("hub", "naive"):
            r = burst(impl, subs, events, strict=args.quick)
            bursts.append(r)
            print(f"burst {impl:5} M={subs:<5} {r['deliveries_per_s']:>10,} deliveries/s  lost={r['lost']}", flush=True)
    pace = []
    for subs, rate, secs in plan_paced:
        for impl in ("hub", "naive"):
            r = paced(impl, subs, rate, secs)
            pace.append(r)
            print(
                f"paced {impl:5} M={subs:<5} {rate:>5}/s p50={r['p50_ms']}ms p99={r['p99_ms']}ms lost={r['lost']}",
                flush=True,
            )
    idle = [idle_cost(impl, idle_n) for impl in ("hub", "naive")]
    storm_row = reconnect_storm(*storm)
    rpc = [correlation(*plan) for plan in plan_rpc]
    app_rows = apps.run(args.quick)
    rows = bursts + pace + idle + [storm_row] + rpc + app_rows

    print()
    print(
        table(
            bursts,
            [
                "impl",
                "subscribers",
                "events",
                "deliveries_per_s",
                "per_server_cpu_s",
                "lost",
                "order_errors",
                "seconds",
                "server_cpu_s",
                "client_cpu_s",
            ],
        )
    )
    for subs, _ in plan_burst:
        ours = next(r for r in bursts if r["impl"] == "hub" and r["subscribers"] == subs)
        base = next(r for r in bursts if r["impl"] == "naive" and r["subscribers"] == subs)
        wall = ours["deliveries_per_s"] / max(1, base["deliveries_per_s"])
        cpu = ours["per_server_cpu_s"] / max(1, base["per_server_cpu_s"])
        print(f"  ours / naive at M={subs}: {wall:.1f}x deliveries/s, {cpu:.1f}x deliveries per server CPU second")
    print()
    print(
        table(
            pace,
            [
                "impl",
                "subscribers",
                "rate",
                "p50_ms",
                "p99_ms",
                "max_ms",
                "first_tenth_p50_ms",
                "last_tenth_p50_ms",
                "lost",
                "publish_s",
                "server_cpu_s",
                "client_cpu_s",
            ],
        )
    )
    print()
    print(table(idle, ["impl", "connections", "rss_per_conn_kib", "cpu_per_connect_ms"]))
    print()
    print(table([storm_row], ["clients", "missed", "seconds", "lost", "order_errors", "server_cpu_s"]))
    print()
    print(
        table(
            rpc,
            [
                "via",
                "clients",
                "concurrency",
                "rate",
                "round_trips",
                "round_trips_per_s",
                "p50_ms",
                "p99_ms",
                "errors",
                "server_cpu_s",
                "client_cpu_s",
            ],
        )
    )
    print()
    print(apps.tables(app_rows, table))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "loadavg_before": os.getloadavg(),
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nresults: {args.out}")
    if not args.quick:
        chart(bursts, pace, args.out.with_suffix(".png"))

    failures = [r for r in rows if r["impl"] == "hub" and (r.get("lost") or r.get("order_errors"))]
    # A trigger without an answer (unpaced runs have enough connections for every request).
    failures += [r for r in rpc if r["rate"] is None and r["errors"]]
    app_failures = apps.failures(app_rows)
    if failures:
        print(f"FAIL: {len(failures)} run(s) of our hub lost or reordered events", file=sys.stderr)
    if app_failures:
        names = ", ".join(r["scenario"] for r in app_failures)
        print(f"FAIL: app run(s) lost, reordered or refused something: {names}", file=sys.stderr)
    return 1 if failures or app_failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
