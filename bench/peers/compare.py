"""``python -m bench peers``: ours beside the peers of :mod:`bench.peers`, in one run, one table.

Each scenario runs every server in turn, on a fresh process, with the same load client
(:mod:`bench.load`), before the next scenario starts: the servers meet the machine in the same
state, give or take a minute.

- **burst**: ``--events`` events published at once to ``--subscribers`` streams: deliveries per
  second, and the server's CPU seconds per million deliveries (read from the server process
  itself, so it stays meaningful when the load client is the limit on this 2-core machine).
- **paced** at each of ``--rates`` events/s to ``--subscribers`` for ``--seconds``: p50/p99
  latency from when each event was due to its arrival (a publisher that falls behind shows).
- **conns** at each of ``--conns``: resident memory per idle connection (RSS growth / streams),
  CPU per connect, the idle CPU over ``--idle-hold`` s at the largest level (heartbeats), then
  p50/p99 of ``--conn-rate`` events/s to all of them.

Every event of every run is checked at every subscriber: ``gaps`` (skipped, though later ones
came), ``dups``, ``reorders`` (a skipped one came later), ``late`` (not there by the run's
deadline, after the last that came: a server behind, not a loss). Exits 1 if ours has any.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.__main__ import (
    RESULTS,
    SERVER_PIDS,
    Clients,
    bench_server,
    free_port,
    merge,
    pct,
    process_cpu,
    stats,
    table,
    wait_subscribers,
)
from bench.load import raise_nofile
from bench.peers import PEERS, Options, Unavailable

OURS = "hub"
CHECKS = ("gaps", "dups", "reorders", "late")


def _checks(res: dict[str, Any]) -> dict[str, int]:
    return {k: int(res[k]) for k in CHECKS}


def _per_million(cpu: float, deliveries: int) -> float | None:
    return round(cpu / deliveries * 1e6, 2) if deliveries else None


def _publish(url: str, body: dict[str, Any], timeout: float) -> float | None:
    """POST /publish; its seconds, or None if it had not answered by ``timeout`` (a server far behind)."""
    began = time.monotonic()
    try:
        httpx.post(url + "/publish", json=body, timeout=timeout).raise_for_status()
    except httpx.TimeoutException:
        return None
    return round(time.monotonic() - began, 2)


def burst(name: str, command: list[str], subscribers: int, events: int, timeout: float) -> dict[str, Any]:
    with bench_server(name, command=command) as url:
        pid = SERVER_PIDS[url]
        clients = Clients(url, subscribers, events, timeout=timeout, keep_latency=True)
        wait_subscribers(url, clients.connected)
        first = stats(url)["seq"] + 1
        cpu0 = process_cpu(pid)
        clients.go(first)
        time.sleep(0.2)  # the workers are in their read loops
        began = time.time()
        _publish(url, {"n": events, "size": 200}, timeout)
        res = merge(clients.results())
        cpu = process_cpu(pid) - cpu0
    delivered = res["received"] - res["dups"]
    elapsed = max(1e-9, res["last_at"] - began)
    return {
        "scenario": "burst",
        "impl": name,
        "subscribers": clients.connected,
        "events": events,
        "deliveries": delivered,
        "expected": clients.connected * events,
        "seconds": round(elapsed, 3),
        "deliveries_per_s": round(delivered / elapsed),
        "server_cpu_s": round(cpu, 2),
        "cpu_s_per_M": _per_million(cpu, delivered),
        "client_cpu_s": round(res["client_cpu_s"], 2),
        **_checks(res),
    }


def _latency(res: dict[str, Any]) -> dict[str, float]:
    lat = [x * 1000 for x in res["latencies"]]
    return {"p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2), "max_ms": round(max(lat or [0]), 2)}


def paced(name: str, command: list[str], subscribers: int, rate: float, seconds: float, grace: float) -> dict[str, Any]:
    n = max(1, int(rate * seconds))
    with bench_server(name, command=command) as url:
        pid = SERVER_PIDS[url]
        clients = Clients(url, subscribers, n, timeout=seconds + grace, keep_latency=True)
        wait_subscribers(url, clients.connected)
        first = stats(url)["seq"] + 1
        cpu0 = process_cpu(pid)
        clients.go(first)
        time.sleep(0.2)
        publish_s = _publish(url, {"n": n, "size": 200, "rate": rate}, seconds + grace)
        res = merge(clients.results())
        cpu = process_cpu(pid) - cpu0
    delivered = res["received"] - res["dups"]
    return {
        "scenario": "paced",
        "impl": name,
        "subscribers": clients.connected,
        "rate": rate,
        "events": n,
        **_latency(res),
        "deliveries": delivered,
        "expected": clients.connected * n,
        # Longer than ``seconds``: the publisher, in the server's loop, fell behind its schedule.
        "publish_s": publish_s,
        "server_cpu_s": round(cpu, 2),
        "cpu_s_per_M": _per_million(cpu, delivered),
        "client_cpu_s": round(res["client_cpu_s"], 2),
        **_checks(res),
    }


def conns(
    name: str, command: list[str], n: int, hold: float, rate: float, seconds: float, grace: float
) -> dict[str, Any]:
    events = max(1, int(rate * seconds))
    with bench_server(name, command=command) as url:
        proc = psutil.Process(SERVER_PIDS[url])
        # Warm up code paths so first-use allocations are not charged to connections.
        warm = Clients(url, 20, 0, timeout=5, workers=1)
        wait_subscribers(url, warm.connected)
        warm.release()
        time.sleep(0.5)
        rss0, cpu0 = proc.memory_info().rss, process_cpu(proc.pid)
        clients = Clients(url, n, events, timeout=seconds + grace, keep_latency=True)
        wait_subscribers(url, clients.connected, limit=120)
        time.sleep(0.5)
        rss1, cpu1 = proc.memory_info().rss, process_cpu(proc.pid)
        idle_cpu_pct = None
        if hold > 0:
            time.sleep(hold)
            idle_cpu_pct = round((process_cpu(proc.pid) - cpu1) / hold * 100, 2)
        first = stats(url)["seq"] + 1
        cpu2 = process_cpu(proc.pid)
        clients.go(first)
        time.sleep(0.5)  # thousands of streams: every worker is reading before the first event
        publish_s = _publish(url, {"n": events, "size": 200, "rate": rate}, seconds + grace)
        res = merge(clients.results())
        cpu = process_cpu(proc.pid) - cpu2
    connected = clients.connected
    return {
        "scenario": "conns",
        "impl": name,
        "connections": connected,
        "kib_per_conn": round((rss1 - rss0) / max(1, connected) / 1024, 2),
        "connect_cpu_ms": round((cpu1 - cpu0) / max(1, connected) * 1000, 3),
        "idle_hold_s": hold,
        "idle_cpu_pct": idle_cpu_pct,
        "rate": rate,
        "events": events,
        **_latency(res),
        "deliveries": res["received"] - res["dups"],
        "expected": connected * events,
        "publish_s": publish_s,
        "server_cpu_s": round(cpu, 2),
        "client_cpu_s": round(res["client_cpu_s"], 2),
        **_checks(res),
    }


# -- Redis for --backend redis ------------------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, no persistence: ``--backend redis``."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(binary, os.X_OK):
        raise SystemExit("--backend redis needs redis-server (apt-get install redis-server), or pass a redis:// URL")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


# -- reporting ----------------------------------------------------------------------------------


def _shown(row: dict[str, Any], key: str, deadline_ms: float) -> Any:
    """A percentile of what came is flattering when much did not: show it as past the deadline."""
    share = row["late"] / max(1, row["expected"])
    if (key == "p99_ms" and share > 0.01) or (key == "p50_ms" and share > 0.5):
        return f">{deadline_ms:.0f}"
    return row[key]


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b:
        return "-"
    return f"{a / b:.2f}"


def report(rows: list[dict[str, Any]], names: list[str], deadlines: dict[str, float]) -> str:
    out: list[str] = []
    burst_rows = [r for r in rows if r["scenario"] == "burst"]
    if burst_rows:
        keys = ["impl", "subscribers", "events", "deliveries_per_s", "cpu_s_per_M", "server_cpu_s"]
        out += [table(burst_rows, [*keys, "client_cpu_s", "seconds", *CHECKS]), ""]
    paced_rows = [dict(r) for r in rows if r["scenario"] == "paced"]
    for r in paced_rows:
        for k in ("p50_ms", "p99_ms"):
            r[k] = _shown(r, k, deadlines[f"paced {r['rate']}"])
    if paced_rows:
        keys = ["impl", "subscribers", "rate", "events", "p50_ms", "p99_ms", "max_ms", "cpu_s_per_M", "publish_s"]
        out += [table(paced_rows, [*keys, "server_cpu_s", "client_cpu_s", *CHECKS]), ""]
    conn_rows = [dict(r) for r in rows if r["scenario"] == "conns"]
    for r in conn_rows:
        for k in ("p50_ms", "p99_ms"):
            r[k] = _shown(r, k, deadlines["conns"])
    if conn_rows:
        keys = ["impl", "connections", "kib_per_conn", "connect_cpu_ms", "idle_hold_s", "idle_cpu_pct", "rate"]
        keys += ["p50_ms", "p99_ms", "max_ms", "publish_s", "server_cpu_s", "client_cpu_s"]
        out += [table(conn_rows, [*keys, *CHECKS]), ""]
    others = [n for n in names if n != OURS and not n.startswith(OURS)]  # hub/redis: see targets()
    if OURS in names and others:
        out.append("ratios, ours / theirs (deliveries/s: above 1 is ours ahead; everything else: below 1 is)")

        lines: list[dict[str, Any]] = []

        def add(metric: str, scenario: str, key: str, **match: Any) -> None:
            ours = _find(rows, OURS, scenario, **match)
            if ours is None:
                return
            line = {"metric": metric}
            for other in others:
                theirs = _find(rows, other, scenario, **match)
                late = ours["late"] or (theirs is not None and theirs["late"])
                note = "*" if late and key.endswith("_ms") else ""
                line[other] = _ratio(ours.get(key), theirs.get(key) if theirs else None) + note
            lines.append(line)

        add("burst deliveries/s", "burst", "deliveries_per_s")
        add("burst CPU s per 1M deliveries", "burst", "cpu_s_per_M")
        for r in rows:
            if r["scenario"] == "paced" and r["impl"] == OURS:
                rate = r["rate"]
                add(f"paced {rate:g}/s p50", "paced", "p50_ms", rate=rate)
                add(f"paced {rate:g}/s p99", "paced", "p99_ms", rate=rate)
                add(f"paced {rate:g}/s CPU s per 1M", "paced", "cpu_s_per_M", rate=rate)
        for r in rows:
            if r["scenario"] == "conns" and r["impl"] == OURS:
                c = r["connections"]
                add(f"{c} conns KiB/conn", "conns", "kib_per_conn", connections=c)
                add(f"{c} conns p50", "conns", "p50_ms", connections=c)
        out.append(table(lines, ["metric", *others]))
        if any("*" in str(v) for line in lines for v in line.values()):
            out.append("* one side had events still missing at the deadline: its percentiles are of those that came")
    goals = targets(rows)
    if goals:
        out += ["", "issue 20's targets, as measured in this run:", table(goals, ["target", "measured", "met"])]
    return "\n".join(out)


def _find(rows: list[dict[str, Any]], impl: str, scenario: str, **match: Any) -> dict[str, Any] | None:
    for r in rows:
        if r["impl"] == impl and r["scenario"] == scenario and all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def targets(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The issue's targets that this run's rows can answer (ours: ``hub``; Redis: ``hub/redis``)."""
    out: list[dict[str, str]] = []

    def goal(target: str, measured: str, met: bool) -> None:
        out.append({"target": target, "measured": measured, "met": "yes" if met else "NO"})

    ours100, go100 = _find(rows, OURS, "paced", rate=100.0), _find(rows, "go", "paced", rate=100.0)
    if ours100 and go100:
        m = ours100["subscribers"]
        goal(
            f"paced 100/s to {m}: p50 <= Go's",
            f"{ours100['p50_ms']} ms vs {go100['p50_ms']} ms",
            ours100["p50_ms"] <= go100["p50_ms"],
        )
        goal(
            f"paced 100/s to {m}: p99 <= 1.5x Go's",
            f"{ours100['p99_ms']} ms vs 1.5 x {go100['p99_ms']} = {1.5 * go100['p99_ms']:.2f} ms",
            ours100["p99_ms"] <= 1.5 * go100["p99_ms"],
        )
    for r in rows:
        if r["impl"] == OURS and r["scenario"] == "paced":
            naive = _find(rows, "naive", "paced", rate=r["rate"])
            if naive:
                behind = naive["late"] > 0
                goal(
                    f"paced {r['rate']:g}/s: p50 and p99 no worse than naive",
                    f"{r['p50_ms']}/{r['p99_ms']} ms vs {naive['p50_ms']}/{naive['p99_ms']} ms"
                    + (f" (naive: {naive['late']} late)" if behind else ""),
                    behind or (r["p50_ms"] <= naive["p50_ms"] and r["p99_ms"] <= naive["p99_ms"]),
                )
    for r in rows:
        if r["impl"] == OURS and r["scenario"] == "conns" and r["connections"] >= 10_000:
            n = r["connections"]
            complete = r["deliveries"] == r["expected"]
            goal(
                f"{n} subscribers at {r['rate']:g}/s: p50 <= 10 ms, every event",
                f"p50 {r['p50_ms']} ms, {r['deliveries']}/{r['expected']}",
                r["p50_ms"] <= 10 and complete,
            )
            goal(f"idle <= 8 KiB/conn at {n}", f"{r['kib_per_conn']} KiB", r["kib_per_conn"] <= 8)
            if r["idle_cpu_pct"] is not None:
                goal(
                    f"heartbeats of {n} idle streams < 2% of a core",
                    f"{r['idle_cpu_pct']}% over {r['idle_hold_s']:g} s",
                    r["idle_cpu_pct"] < 2,
                )
    mem, red = _find(rows, OURS, "burst"), _find(rows, f"{OURS}/redis", "burst")
    if mem and red:
        ratio = red["deliveries_per_s"] / max(1, mem["deliveries_per_s"])
        goal("Redis burst >= 0.9x memory", f"{ratio:.2f}x", ratio >= 0.9)
    for r in rows:
        if r["impl"] == f"{OURS}/redis" and r["scenario"] == "paced":
            mem_r = _find(rows, OURS, "paced", rate=r["rate"])
            if mem_r:
                ratio = r["p99_ms"] / max(1e-9, mem_r["p99_ms"])
                goal(f"Redis paced {r['rate']:g}/s p99 within 10% of memory", f"{ratio:.2f}x", ratio <= 1.1)
    mine = [r for r in rows if r["impl"].startswith(OURS)]
    if mine:
        bad = sum(1 for r in mine if any(r[k] for k in CHECKS))
        goal("ours: no lost, duplicated, reordered or late event", f"{bad} of {len(mine)} runs with any", bad == 0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench peers", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run of every scenario (~1 min)")
    parser.add_argument("--impls", default=",".join(PEERS), help=f"comma-separated, of {', '.join(PEERS)}")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=1000, help="burst size")
    parser.add_argument("--rates", default="10,100,1000", help="paced runs, events/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="each paced run (5 s at rates over 100/s)")
    parser.add_argument("--grace", type=float, default=20.0, help="how long after a run's schedule events may come")
    parser.add_argument("--conns", type=int, nargs="+", default=[1000], help="idle connection counts, e.g. 1000 10000")
    parser.add_argument("--idle-hold", type=float, default=16.0, help="idle CPU over this long, at the largest --conns")
    parser.add_argument("--conn-rate", type=float, default=2.0, help="events/s to all --conns streams after idling")
    parser.add_argument("--conn-seconds", type=float, default=5.0)
    parser.add_argument(
        "--backend",
        help="also run ours on this backend (redis://host:port/db; 'redis' starts a throwaway redis-server)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "peers.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers, args.events, args.rates, args.seconds, args.grace = 50, 200, "100", 1.0, 10.0
        args.conns, args.idle_hold, args.conn_seconds = [50], 0.0, 1.0
    rates = [float(x) for x in args.rates.split(",") if x]
    raise_nofile()  # the servers inherit it: 10,000 streams need more than 1,024 descriptors
    unknown = [n for n in args.impls.split(",") if n not in PEERS]
    if unknown:
        parser.error(f"unknown --impls {', '.join(unknown)}: use {', '.join(PEERS)}")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        build_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-peers-")))
        backend = args.backend
        if backend == "redis":
            backend = stack.enter_context(redis_server())
        commands: dict[str, list[str]] = {}
        for name in args.impls.split(","):
            try:
                commands[name] = PEERS[name].command(Options(build_dir))
            except Unavailable as exc:
                print(f"{name}: skipped: {exc}", flush=True)
                continue
            if name == OURS and backend:
                commands[f"{OURS}/redis"] = PEERS[name].command(Options(build_dir, backend=backend))
        names = list(commands)
        print(f"servers: {', '.join(names)}", flush=True)
        rows: list[dict[str, Any]] = []

        def each(label: str, run: Any) -> None:
            for name, command in commands.items():
                row = run(name, command)
                rows.append(row)
                faults = " ".join(f"{k}={row[k]}" for k in CHECKS if row[k])
                print(f"{label} {name}: {_progress(row)} {faults}".rstrip(), flush=True)

        each("burst", lambda n, c: burst(n, c, args.subscribers, args.events, 60 + args.grace))
        deadlines = {"conns": (args.conn_seconds + args.grace) * 1000}
        for rate in rates:
            secs = args.seconds if rate <= 100 else min(args.seconds, 5.0)
            deadlines[f"paced {rate}"] = (secs + args.grace) * 1000
            each(
                f"paced {rate:g}/s",
                lambda n, c, rate=rate, secs=secs: paced(n, c, args.subscribers, rate, secs, args.grace),
            )
        top = max(args.conns)
        for count in sorted(args.conns):
            hold = args.idle_hold if count == top else 0.0
            each(
                f"conns {count}",
                lambda n, c, count=count, hold=hold: conns(
                    n, c, count, hold, args.conn_rate, args.conn_seconds, args.grace
                ),
            )
    print()
    print(report(rows, names, deadlines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "argv": sys.argv[1:],
        "loadavg_after": os.getloadavg(),
        "seconds": round(time.monotonic() - started, 1),
        "backend": backend,
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nresults: {args.out} ({meta['seconds']} s; load average after: {meta['loadavg_after'][0]:.2f})")
    ours_faults = [r for r in rows if r["impl"].startswith(OURS) and any(r[k] for k in CHECKS)]
    if ours_faults:
        print(f"FAIL: {len(ours_faults)} run(s) of ours lost, duplicated, reordered or missed events", file=sys.stderr)
    return 1 if ours_faults else 0


def _progress(row: dict[str, Any]) -> str:
    if row["scenario"] == "burst":
        return f"{row['deliveries_per_s']:,} deliveries/s, {row['cpu_s_per_M']} CPU s per 1M"
    if row["scenario"] == "paced":
        return f"p50={row['p50_ms']}ms p99={row['p99_ms']}ms"
    idle = "" if row["idle_cpu_pct"] is None else f", idle CPU {row['idle_cpu_pct']}% of a core"
    return f"{row['kib_per_conn']} KiB/conn{idle}, p50={row['p50_ms']}ms p99={row['p99_ms']}ms"
