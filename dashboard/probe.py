"""One psutil pass: everything a metrics frame shows, as plain JSON-ready data (blocking; run in a thread).

Rates and percentages come from deltas between two passes that this object keeps itself, rather
than from ``psutil.cpu_percent(interval=None)`` and friends, whose "since the last call" state is
global to the process: two probes (two apps, or a test beside a server) would corrupt each other.
"""

from __future__ import annotations

import pwd
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = ["PROC_ATTRS", "Probe"]

# Each attribute is one or two reads of /proc/<pid>/...; psutil's oneshot() shares them. No
# "username" (a passwd lookup per process) nor "memory_percent" (we divide by the total ourselves).
PROC_ATTRS = ["pid", "name", "uids", "cpu_times", "memory_info", "status", "create_time"]
_SKIP_DISKS = ("loop", "ram")


def _busy_idle(t: Any) -> tuple[float, float]:
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)
    # guest time is already counted in user time on Linux; subtracting keeps 100 % the ceiling.
    total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return total - idle, idle


def _percent(busy: float, idle: float) -> float:
    whole = busy + idle
    return round(100.0 * busy / whole, 1) if whole > 0 else 0.0


@dataclass
class Probe:
    """Counters from the previous pass; :meth:`sample` returns one frame (without ``seq``)."""

    process_limit: int = 300
    passes: int = 0
    _cpu: list[tuple[float, float]] = field(default_factory=list)
    _disk: dict[str, tuple[int, int]] = field(default_factory=dict)
    _disk_total: tuple[int, int] | None = None
    _net: dict[str, tuple[int, int]] = field(default_factory=dict)
    _procs: dict[tuple[int, float], float] = field(default_factory=dict)  # (pid, start) -> cpu seconds
    _at: float | None = None  # monotonic time of the previous pass
    _users: dict[int, str] = field(default_factory=dict)

    def sample(self) -> dict[str, Any]:
        now, wall = time.monotonic(), time.time()
        dt = None if self._at is None else max(now - self._at, 1e-6)
        self._at = now
        self.passes += 1
        mem = psutil.virtual_memory()
        swap = psutil.swap_memory()
        frame: dict[str, Any] = {
            "t": round(wall, 3),
            "cpu": self._cpu_part(),
            "load": [round(x, 2) for x in psutil.getloadavg()],
            "mem": {
                "total": mem.total,
                "used": mem.total - mem.available,
                "available": mem.available,
                "percent": round(mem.percent, 1),
            },
            "swap": {"total": swap.total, "used": swap.used, "percent": round(swap.percent, 1)},
            "disks": self._disks(),
            "uptime_s": round(wall - psutil.boot_time()),
            "temps": self._temps(),
        }
        frame["disk_io"], frame["disk_rate"] = self._disk_io(dt)
        frame["net_io"], frame["net_rate"] = self._net_io(dt)
        frame["procs"], frame["procs_total"] = self._processes(dt, wall, mem.total)
        return frame

    # -- parts ------------------------------------------------------------------------------

    def _cpu_part(self) -> dict[str, Any]:
        cores = [_busy_idle(t) for t in psutil.cpu_times(percpu=True)]
        prev = self._cpu if len(self._cpu) == len(cores) else [(0.0, 0.0)] * len(cores)
        self._cpu = cores
        deltas = [(b - pb, i - pi) for (b, i), (pb, pi) in zip(cores, prev, strict=True)]
        per_core = [_percent(b, i) for b, i in deltas]
        total = _percent(sum(b for b, _ in deltas), sum(i for _, i in deltas))
        return {"total": total, "per_core": per_core, "count": len(cores)}

    def _disks(self) -> list[dict[str, Any]]:
        out, seen = [], set()
        for part in psutil.disk_partitions(all=False):
            if part.device in seen or part.mountpoint.startswith(("/snap/", "/var/lib/docker/")):
                continue
            seen.add(part.device)
            try:
                u = psutil.disk_usage(part.mountpoint)
            except OSError:
                continue  # unmounted meanwhile, or not ours to read
            out.append(
                {
                    "mount": part.mountpoint,
                    "device": part.device,
                    "fstype": part.fstype,
                    "total": u.total,
                    "used": u.used,
                    "percent": round(u.percent, 1),
                }
            )
        return out

    def _disk_io(self, dt: float | None) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        per = psutil.disk_io_counters(perdisk=True) or {}
        total = psutil.disk_io_counters(perdisk=False)
        rates: dict[str, dict[str, float]] = {}
        current: dict[str, tuple[int, int]] = {}
        for name, c in per.items():
            if name.startswith(_SKIP_DISKS):
                continue
            current[name] = (c.read_bytes, c.write_bytes)
            if dt is not None and name in self._disk:
                r0, w0 = self._disk[name]
                rates[name] = {"read_bps": _rate(c.read_bytes, r0, dt), "write_bps": _rate(c.write_bytes, w0, dt)}
            else:
                rates[name] = {"read_bps": 0.0, "write_bps": 0.0}
        self._disk = current
        summary = {"read_bps": 0.0, "write_bps": 0.0}
        if total is not None:
            if dt is not None and self._disk_total is not None:
                summary = {
                    "read_bps": _rate(total.read_bytes, self._disk_total[0], dt),
                    "write_bps": _rate(total.write_bytes, self._disk_total[1], dt),
                }
            self._disk_total = (total.read_bytes, total.write_bytes)
        return rates, summary

    def _net_io(self, dt: float | None) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        rates: dict[str, dict[str, float]] = {}
        current: dict[str, tuple[int, int]] = {}
        rx = tx = 0.0
        for name, c in (psutil.net_io_counters(pernic=True) or {}).items():
            current[name] = (c.bytes_recv, c.bytes_sent)
            if dt is not None and name in self._net:
                r0, t0 = self._net[name]
                rates[name] = {"rx_bps": _rate(c.bytes_recv, r0, dt), "tx_bps": _rate(c.bytes_sent, t0, dt)}
            else:
                rates[name] = {"rx_bps": 0.0, "tx_bps": 0.0}
            if name != "lo":  # loopback traffic is not network traffic
                rx += rates[name]["rx_bps"]
                tx += rates[name]["tx_bps"]
        self._net = current
        return rates, {"rx_bps": round(rx, 1), "tx_bps": round(tx, 1)}

    def _temps(self) -> list[dict[str, Any]]:
        read = getattr(psutil, "sensors_temperatures", None)
        if read is None:
            return []
        try:
            sensors = read()
        except (OSError, RuntimeError):
            return []
        return [
            {"sensor": chip, "label": s.label or chip, "current": s.current, "high": s.high, "critical": s.critical}
            for chip, entries in sensors.items()
            for s in entries
        ]

    def _user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name

    def _processes(self, dt: float | None, wall: float, mem_total: int) -> tuple[list[dict[str, Any]], int]:
        rows: list[dict[str, Any]] = []
        seen: dict[tuple[int, float], float] = {}
        last_wall = wall - dt if dt is not None else None
        for p in psutil.process_iter(PROC_ATTRS, ad_value=None):
            info = p.info
            start = info["create_time"]
            times = info["cpu_times"]
            if start is None:
                continue
            start = round(start, 2)
            used = (times.user + times.system) if times is not None else 0.0
            key = (info["pid"], start)
            seen[key] = used
            before = self._procs.get(key)
            if before is not None and dt is not None:
                cpu = 100.0 * (used - before) / dt
            elif last_wall is not None and start > last_wall:
                cpu = 100.0 * used / max(wall - start, 1e-3)  # born since the last pass
            else:
                cpu = 0.0
            rss = info["memory_info"].rss if info["memory_info"] is not None else 0
            uids = info["uids"]
            rows.append(
                {
                    "pid": info["pid"],
                    "name": info["name"] or "?",
                    "user": self._user(uids.real) if uids is not None else "?",
                    "cpu": round(max(cpu, 0.0), 1),
                    "mem": round(100.0 * rss / mem_total, 2) if mem_total else 0.0,
                    "rss": rss,
                    "status": info["status"] or "?",
                    "start": start,
                }
            )
        self._procs = seen
        rows.sort(key=lambda r: (-r["cpu"], -r["rss"], r["pid"]))
        return rows[: self.process_limit], len(rows)


def _rate(now: int, before: int, dt: float) -> float:
    # Counters can wrap or reset (a NIC re-created); a negative delta is reported as 0.
    return round(max(now - before, 0) / dt, 1)
