"""A throwaway Redis Sentinel set-up: a master, a replica and three sentinels, on free ports.

Debian's ``redis-sentinel`` (``./run test`` installs it). Sentinels rewrite their config file, so
each gets its own in the test's directory. Everything is stopped by :meth:`SentinelSet.stop`.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.rig import RedisServer, free_port

__all__ = ["SERVICE", "SentinelSet"]

SERVICE = "mymaster"
SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"


class SentinelSet:
    """``master`` and ``replica`` (``RedisServer``s) watched by three sentinels, quorum 2.

    ``down-after-milliseconds 1000``: a killed master is failed over in about 2-4 s.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.master = RedisServer()
        self.replica = RedisServer()
        self.replica._cmd += ["--replicaof", "127.0.0.1", str(self.master.port)]
        # The replica's full sync goes through an RDB file: in the test's directory, not the cwd.
        for name, server in (("master", self.master), ("replica", self.replica)):
            (base / name).mkdir(parents=True, exist_ok=True)
            server._cmd += ["--dir", str(base / name)]
        self.ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def _conf(self, i: int, port: int) -> Path:
        d = self.base / f"sentinel-{i}"
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {d}\n"
            "sentinel resolve-hostnames no\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        return conf

    def start(self) -> SentinelSet:
        self.master.start()
        self.replica.start()
        with redis.Redis(port=self.replica.port, socket_timeout=2) as r:
            deadline = time.monotonic() + 10
            while r.info("replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica did not sync with the master")
                time.sleep(0.05)
        for i, port in enumerate(self.ports):
            self.procs.append(
                subprocess.Popen(
                    [SENTINEL, str(self._conf(i, port))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        for port in self.ports:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError, redis.RedisError), redis.Redis(port=port, socket_timeout=1) as s:
                    state = s.sentinel_master(SERVICE)
                    # Knows the replica and the other two sentinels: ready to fail over.
                    if int(state["num-slaves"]) >= 1 and int(state["num-other-sentinels"]) >= 2:
                        break
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"sentinel on port {port} did not see the replica and its peers")
                time.sleep(0.1)
        return self

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers reports it."""
        for port in self.ports:
            with contextlib.suppress(OSError, redis.RedisError), redis.Redis(port=port, socket_timeout=1) as s:
                host = s.sentinel_get_master_addr_by_name(SERVICE)
                return int(host[1]) if host else None
        return None

    def wait_failover(self, timeout: float = 20.0) -> RedisServer:
        """Until the sentinels name the replica master and it takes writes; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.master_port() == self.replica.port:
                with contextlib.suppress(redis.RedisError), redis.Redis(port=self.replica.port, socket_timeout=1) as r:
                    if r.info("replication").get("role") == "master":
                        return self.replica
            time.sleep(0.1)
        raise AssertionError(f"no failover to the replica within {timeout} s")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        self.replica.stop()
        self.master.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[SentinelSet]:
        self.start()
        try:
            yield self
        finally:
            self.stop()
