"""Debian's nginx in front of ``python -m showcase`` instances, running the shipped configs
(``deploy/nginx/sse.conf``, ``deploy/nginx/sse-tls.conf``) with only their instance addresses,
listen ports and certificate filled in: a config that drifts from what the tests expect fails here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.rig import RedisServer, free_port

from .rig import ROOT, Product

__all__ = ["HOST", "PLAIN", "TLS", "Nginx", "certificate", "edge"]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PLAIN = ROOT / "deploy" / "nginx" / "sse.conf"
TLS = ROOT / "deploy" / "nginx" / "sse-tls.conf"
HOST = "chat.example.com"  # the shipped server_name; the instances get --allowed-hosts for it


def certificate(where: Path, name: str = HOST) -> tuple[Path, Path]:
    """A throw-away self-signed certificate (and key) for ``name``."""
    cert, key = where / f"{name}.pem", where / f"{name}.key"
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _one(pattern: str, repl: str, text: str, what: str) -> str:
    out, n = re.subn(pattern, repl, text, flags=re.M)
    assert n == 1, f"the shipped nginx config should have one {what}"
    return out


def render(shipped: str, ports: list[int], listen: int, tls: tuple[Path, Path] | None = None) -> str:
    """The shipped config with our instance ports, listen addresses and certificate."""
    servers = re.findall(r"^(\s*server 127\.0\.0\.1:)(\d+)( .*;)$", shipped, flags=re.M)
    assert len(servers) == len(ports), "the shipped nginx config should list one `server` per instance"
    rendered = shipped
    for (indent, old, rest), port in zip(servers, ports, strict=True):
        rendered = rendered.replace(f"{indent}{old}{rest}", f"{indent}{port}{rest}", 1)
    if tls is None:
        return _one(r"^(\s*)listen 80;$", rf"\g<1>listen 127.0.0.1:{listen};", rendered, "`listen 80;`")
    cert, key = tls
    rendered = _one(r"^(\s*)listen 80;$", rf"\g<1>listen 127.0.0.1:{free_port()};", rendered, "`listen 80;`")
    h2 = rf"\g<1>listen 127.0.0.1:{listen} ssl http2;"
    rendered = _one(r"^(\s*)listen 443 ssl http2;$", h2, rendered, "`listen 443 ssl http2;`")
    rendered = _one(r"^(\s*)ssl_certificate \S+;$", rf"\g<1>ssl_certificate {cert};", rendered, "`ssl_certificate`")
    return _one(r"^(\s*)ssl_certificate_key \S+;$", rf"\g<1>ssl_certificate_key {key};", rendered, "certificate key")


class Nginx:
    """Debian's nginx in the foreground, everything it writes (logs, pid, temp files) under ``root``.

    The access log has one line per request: status, upstream statuses and addresses, method,
    path, protocol and nginx's connection serial number (which requests shared a connection).
    """

    def __init__(
        self, root: Path, ports: list[int], *, shipped: Path = PLAIN, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        (root / "sse.conf").write_text(render(shipped.read_text(), ports, self.port, tls))
        temps = "\n".join(
            f"    {kind}_temp_path {root}/{kind}_temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # As root, nginx's workers would run as `nobody` and could not write under pytest's
        # 0700 tmp dirs; as anyone else the `user` directive is ignored.
        user = "user root;" if os.geteuid() == 0 else ""
        (root / "nginx.conf").write_text(
            f"""{user}
worker_processes 1;
error_log {root}/error.log warn;
pid {root}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    log_format up '$status [$upstream_status] [$upstream_addr] $request_method $uri $server_protocol c$connection';
    access_log {root}/access.log up;
{temps}
    include {root}/sse.conf;
}}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        if not os.access(NGINX, os.X_OK):
            raise RuntimeError("nginx is missing: sudo apt-get install -y nginx (./run test installs it)")
        cmd = [NGINX, "-p", str(self.root), "-e", str(self.root / "error.log"), "-c", str(self.root / "nginx.conf")]
        check = subprocess.run([*cmd, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([*cmd, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(self.url + "/healthz", headers={"Host": HOST}, timeout=1, verify=False)
                return self
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not start: {self.errors()}")

    def errors(self) -> str:
        log = self.root / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def access(self) -> list[str]:
        return (self.root / "access.log").read_text().splitlines()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def edge(
    tmp_path: Path, drain_seconds: float, *, shipped: Path = PLAIN, tls: bool = False
) -> Iterator[tuple[Nginx, list[Product]]]:
    """Two ``python -m showcase`` instances on one redis-server behind nginx running ``shipped``
    (with a throw-away certificate when ``tls``), each told the shipped name and to trust nginx."""
    redis = RedisServer()
    with redis.running():
        args = [
            "--backend",
            redis.url,
            "--drain-seconds",
            str(drain_seconds),
            "--proxy-headers",
            "--allowed-hosts",
            HOST,
        ]
        products = [Product(tmp_path / name, *args) for name in ("a", "b")]
        cert = certificate(tmp_path / "tls") if tls else None
        nginx = Nginx(tmp_path / "nginx", [p.port for p in products], shipped=shipped, tls=cert)
        try:
            for p in products:
                p.start(ready_path="/readyz")
            yield nginx.start(), products
        finally:
            nginx.stop()
            for p in products:
                p.stop()
