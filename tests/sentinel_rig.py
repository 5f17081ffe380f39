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

    ``down-after-milliseconds 1000``: a killed master is failed over in about 2-4 s. With
    ``tls=True`` every server and sentinel speaks only TLS (a throw-away certificate for 127.0.0.1,
    made here with ``openssl``), replication included; :attr:`url` is then ``rediss+sentinel://``.
    """

    def __init__(self, base: Path, *, tls: bool = False) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.ca: Path | None = _certificate(base) if tls else None
        self.master = RedisServer()
        self.replica = RedisServer()
        self.replica._cmd += ["--replicaof", "127.0.0.1", str(self.master.port)]
        if self.ca is not None:
            for server in (self.master, self.replica):
                port = server._cmd.index("--port") + 1
                server._cmd[port] = "0"  # no plain-text port at all
                server._cmd += ["--tls-port", str(server.port), *_tls_args(self.ca), "--tls-replication", "yes"]
        # The replica's full sync goes through an RDB file: in the test's directory, not the cwd.
        for name, server in (("master", self.master), ("replica", self.replica)):
            (base / name).mkdir(parents=True, exist_ok=True)
            server._cmd += ["--dir", str(base / name)]
        self.ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        if self.ca is None:
            return f"redis+sentinel://{hosts}/{SERVICE}/0"
        return f"rediss+sentinel://{hosts}/{SERVICE}/0?ssl_ca_certs={self.ca}"

    def client(self, port: int, timeout: float = 2.0) -> redis.Redis:
        """A plain redis-py client of one server or sentinel (TLS when the set is)."""
        if self.ca is None:
            return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout)
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout, ssl=True, ssl_ca_certs=str(self.ca))

    def _conf(self, i: int, port: int) -> Path:
        d = self.base / f"sentinel-{i}"
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "sentinel.conf"
        if self.ca is None:
            listen = f"port {port}\n"
        else:
            args = _tls_args(self.ca)
            tls = "".join(f"{args[i].lstrip('-')} {args[i + 1]}\n" for i in range(0, len(args), 2))
            listen = f"port 0\ntls-port {port}\n{tls}tls-replication yes\n"
        conf.write_text(
            f"{listen}bind 127.0.0.1\nprotected-mode no\ndir {d}\n"
            "sentinel resolve-hostnames no\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        return conf

    def start(self) -> SentinelSet:
        self.master.start()
        self.replica.start()
        with self.client(self.replica.port) as r:
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
                with contextlib.suppress(OSError, redis.RedisError), self.client(port, 1) as s:
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
            with contextlib.suppress(OSError, redis.RedisError), self.client(port, 1) as s:
                host = s.sentinel_get_master_addr_by_name(SERVICE)
                return int(host[1]) if host else None
        return None

    def wait_failover(self, timeout: float = 20.0) -> RedisServer:
        """Until the sentinels name the replica master and it takes writes; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.master_port() == self.replica.port:
                with contextlib.suppress(redis.RedisError), self.client(self.replica.port, 1) as r:
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
        try:
            self.start()
        except BaseException:
            self.stop()  # whatever had started
            raise
        try:
            yield self
        finally:
            self.stop()


def _certificate(base: Path) -> Path:
    """A self-signed certificate and key for 127.0.0.1 under ``base``; returns the certificate
    (which is also its own CA)."""
    cert, key = base / "tls.crt", base / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert


def _tls_args(ca: Path) -> list[str]:
    key = ca.with_suffix(".key")
    return ["--tls-cert-file", str(ca), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
            "--tls-auth-clients", "no"]  # fmt: skip
