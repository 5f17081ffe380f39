"""``/dashboard/``: live system metrics from psutil, with guarded control actions, for one or more hosts.

- ``GET /dashboard/events?host=``: ``hosts`` + ``snapshot`` + ``history`` on connect, then ephemeral
  ``metrics`` frames, and stored (replayed on resume) ``alert``, ``resolved``, ``command``,
  ``settings``; ``gone`` when the host went away.
- ``GET /dashboard/hosts``: the hosts this instance can see (each instance publishes its own).
- ``GET /dashboard/snapshot``, ``/history``, ``/audit`` (``?host=``), ``/whoami``: state as JSON.
- ``POST /dashboard/commands?host=``: settings and process actions, run by the instance that owns
  the host; control token required.
- ``POST /dashboard/login`` / ``logout``: the page's login session (an HttpOnly cookie naming it).
- ``GET /dashboard/session/events`` + ``POST /dashboard/session/respond``: the page's session, over
  which the server asks it to confirm dangerous actions; it notes the login it was opened with.

The routes are in ``routes_hosts.py`` (what is shown) and ``routes_control.py`` (acting); this
module wires the parts (``context.Dashboard``) into one :class:`shared.apps.App`.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.datastructures import State

from shared.apps import App, app_defaults
from shared.backends import Backend, from_url
from shared.correlation import Correlator
from shared.health import health_routes
from shared.hub import Hub, HubSettings
from shared.pages import page_route, static_router, vendor_router
from shared.routing import Router
from shared.security import redact_access_log

from . import routes_control, routes_hosts
from .audit import AuditLog
from .auth import ControlAuth
from .cluster import Cluster
from .commands import Commander
from .context import Dashboard
from .hosts import Hosts, check_host_name, host_topic
from .sampler import Sampler
from .sessions import LoginSessions, SqliteSessions
from .settings import DashboardSettings

__all__ = ["control_token", "create_app", "login_lines"]

STATIC = Path(__file__).parent / "static"
# Commands and answers are small JSON objects; a set_rules list of 20 rules is about 2 KiB.
MAX_BODY = 64 * 1024


def create_app(
    data_dir: Path,
    settings: DashboardSettings | None = None,
    *,
    backend: Backend | str | None = None,
    hub_settings: HubSettings | None = None,
    **options: Any,
) -> App:
    """The dashboard app (the shape every app has: ``docs/app-contract.md``). ``options`` are
    fields of ``settings`` to change (``interval=0.25``); ``control_token=None`` generates one:
    read it with :func:`control_token`.

    Several instances on one Redis ``backend`` show each other's hosts: ``host_name`` (default:
    the machine's name) is the host this instance samples, or shares with other instances of the
    same name, one of which samples it. All instances must share the control token. The log-ins
    are in ``<data_dir>/dashboard-logins.sqlite3``, or in the backend's Redis when it has one,
    shared by every instance there."""
    s = dataclasses.replace(settings or DashboardSettings(), **options)
    name = check_host_name(s.host_name if s.host_name is not None else default_host_name())
    hub = Hub(from_url(backend) if isinstance(backend, str | None) else backend, hub_settings)
    logins = login_sessions(hub.backend, Path(data_dir), max_age=s.login_max_age, idle=s.login_idle)
    auth = ControlAuth(s.control_token, sessions=logins, max_failures=s.max_login_failures)
    sampler = Sampler(
        hub,
        interval=s.interval,
        history_seconds=s.history_seconds,
        process_limit=s.process_limit,
        rules=list(s.rules) if s.rules is not None else None,
        topic=host_topic(name),
    )
    router = Router(hub, "dashboard", meta={"host": name, "since": time.time()}, beat=s.beat)
    # With the router, a page session lives on the instance its stream last opened on, and a
    # confirmation is asked there (a reconnect elsewhere moves it; issue 13).
    correlator = Correlator(
        hub, grace=s.session_grace, max_timeout=max(s.confirm_timeout, 1.0), max_sessions=s.max_sessions, router=router
    )
    audit = AuditLog(Path(data_dir) / "dashboard.sqlite3")
    commander = Commander(hub, sampler, correlator, audit, auth, confirm_timeout=s.confirm_timeout)
    hosts = Hosts(router, sampler, name)
    cluster = Cluster(router, hosts, sampler, commander, audit)
    parts = Dashboard(s, hub, sampler, auth, logins, correlator, audit, commander, router, hosts, cluster)
    return App(
        prefix="/dashboard",
        settings=s,
        # Closed in this order by shared.server before the app's shutdown hooks: no more frames,
        # then the goodbye (through the hub, so before it), so another instance of this host
        # takes over and the others see it gone at once, not after three beats.
        closables=[hosts, router, hub],
        route_handlers=[
            *health_routes(),
            page_route("/dashboard", STATIC / "dashboard.html", "dashboard page"),
            routes_hosts.events,
            routes_hosts.snapshot,
            routes_hosts.history,
            routes_hosts.audit_log,
            routes_control.whoami,
            routes_hosts.hosts_list,
            *[h for h in routes_control.handlers if h is not routes_control.whoami],
            static_router("/dashboard", STATIC, name="dashboard-static"),
            vendor_router("/dashboard", name="dashboard-vendor"),
        ],
        state=State({"dashboard": parts}),
        # The election in hosts.start starts the sampler when this instance owns its host.
        on_startup=[
            redact_access_log,
            hub.start,
            correlator.start,
            audit.start,
            logins.start,
            router.start,
            hosts.start,
        ],
        on_shutdown=[hosts.stop, correlator.close, router.close, logins.close, audit.stop, hub.close],
        **app_defaults(
            "/dashboard", "dashboard", "Live system metrics over SSE, with guarded control actions.", max_body=MAX_BODY
        ),
    )


def _parts(app: Litestar) -> Dashboard:
    parts: Dashboard = app.state.dashboard
    return parts


def control_token(app: Litestar) -> str:
    """The control token of an app made by :func:`create_app` (given or generated)."""
    return _parts(app).auth.token


def login_sessions(backend: Backend, data_dir: Path, *, max_age: float, idle: float) -> LoginSessions:
    """In the hub's Redis when it has one (every instance must see a log-out at once), else in SQLite."""
    url = getattr(backend, "url", None)
    if backend.spans_processes and isinstance(url, str):
        from .redis_sessions import RedisSessions  # only with Redis: redis-py is optional

        return RedisSessions(url, prefix=str(getattr(backend, "prefix", "sse:")), max_age=max_age, idle=idle)
    return SqliteSessions(data_dir / "dashboard-logins.sqlite3", max_age=max_age, idle=idle)


def default_host_name() -> str:
    """The machine's name, cut to what a host name may be here (``check_host_name``)."""
    raw = socket.gethostname().split(".")[0] or "localhost"
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in raw)[:63].lstrip("._-")
    return cleaned or "localhost"


def login_lines(app: Litestar, base_url: str, *, generated: bool | None = None) -> list[str]:
    """What to print at start: where the dashboard is and, if generated, its control token.

    ``generated``: whether the caller made the token up (``python -m`` does, once, for all its
    workers); ``None``: whether :func:`create_app` did."""
    parts = _parts(app)
    url = f"{base_url}/dashboard/"
    lines = [f"Dashboard on {url} (host {parts.hosts.name!r})"]
    if parts.auth.generated if generated is None else generated:
        token = control_token(app)
        lines += [
            f"Control token (generated): {token}",
            f"Open {url}#token={token} to log in with it, or send 'Authorization: Bearer {token}'.",
        ]
    else:
        lines.append("Control token: as given (--control-token or DASHBOARD_CONTROL_TOKEN)")
    return lines
