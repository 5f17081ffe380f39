"""``/exec/``: start commands, stream their output, send input and signals, share the session.

Every endpoint but the page, its static files and ``POST /exec/login`` needs a token (see
``auth.py``). Operators start runs and send input, signals and resizes; viewers only watch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State

from shared.apps import App, app_defaults
from shared.backends import Backend, BackendUnavailable, MemoryBackend, from_url
from shared.backends.redis_url import is_redis_url
from shared.datadir import private_dir
from shared.errors import error_response as errors_response
from shared.health import health_routes
from shared.hub import Hub, HubSettings
from shared.pages import page_route, static_router, vendor_router
from shared.security import new_token

from . import routes_runs, routes_session, routes_tokens
from .actions import ACTIONS
from .auth import Auth
from .cluster import Cluster
from .context import PREFIX, RUNS_TOPIC, ExecState, unavailable
from .credentials import Credentials, SqliteCredentials
from .grants import Grants
from .logtopics import RunLogBackend
from .mirror import run_topic
from .policy import Policy
from .redis_conn import RedisConn
from .redis_credentials import RedisCredentials
from .run_index import RunIndex
from .runner import NotRunning, Runner
from .settings import ExecSettings
from .store import RunRow, Store
from .streams import HEARTBEAT_S

__all__ = ["TOKEN_ENV", "ExecSettings", "create_app", "login_lines", "login_text", "operator_token"]

STATIC = Path(__file__).parent / "static"
TOKEN_ENV = "REMOTE_EXEC_TOKEN"
# The largest body is an input of routes_runs.MAX_INPUT_BYTES as JSON text, where escapes (\u0001) take up to
# six bytes per byte; anything bigger is refused with 413 before it is read.
MAX_BODY = 512 * 1024

log = logging.getLogger(__name__)


def _backend_down(request: Request[Any, Any, Any], exc: BackendUnavailable) -> Response[dict[str, Any]]:
    """Redis away while a guard or handler asked it (tokens, sessions, the run index): 503."""
    return errors_response(request, unavailable(exc))


def create_app(
    data_dir: Path,
    settings: ExecSettings | None = None,
    *,
    backend: Backend | str | None = None,
    hub_settings: HubSettings | None = None,
    **options: Any,
) -> App:
    """The ``/exec/`` app (the shape every app has: ``docs/app-contract.md``). ``options`` are
    fields of ``settings`` to change (``token=..., policy=...``). ``settings.token=None`` makes a
    new random operator token: read it back with :func:`operator_token`. ``hub_settings`` sets
    the stream limits (``max_streams_per_client`` counts run streams too).

    ``backend`` (a ``Backend`` or a URL; default: in memory) shared by several instances, e.g.
    ``redis://127.0.0.1:6379/0``, makes this one instance of several: run output goes through the
    backend so any instance serves any run, and actions on a run are routed to the instance that
    runs it (``settings.instance``, ``beat``, ``lost_after``). Viewer tokens and sessions are
    then kept in Redis, so every instance knows them."""
    s = dataclasses.replace(settings or ExecSettings(), **options)
    token, heartbeat = s.token, s.heartbeat
    # The data dir holds the session keys, tokens and every run's log: no run may read it.
    policy = (s.policy or Policy.default()).protecting(data_dir)
    generated = token is None
    operator = token if token is not None else new_token(24)
    if isinstance(backend, str):
        backend = from_url(backend)
    single = backend is None or isinstance(backend, MemoryBackend)
    store = Store(data_dir / "exec.sqlite3")
    runner = Runner(data_dir, store, policy)
    if heartbeat != HEARTBEAT_S:
        hub_settings = dataclasses.replace(hub_settings or HubSettings(), heartbeat=heartbeat)
    if single:
        # One instance: run topics are read from the runs' log files (logtopics.py), the rest
        # (the run list) kept in memory.
        backend = RunLogBackend(MemoryBackend(max_events=1) if backend is None else backend, runner)
    assert backend is not None
    hub = Hub(backend, hub_settings)
    conn: RedisConn | None = None
    credentials: Credentials = SqliteCredentials(store)
    cluster: Cluster | None = None
    if not single:
        url = getattr(backend, "url", None)
        if not isinstance(url, str) or not is_redis_url(url):
            raise ValueError(f"remote exec on several instances needs a Redis backend, not {type(backend).__name__}")
        conn = RedisConn(url, str(getattr(backend, "prefix", "sse:")))
        credentials = RedisCredentials(conn)
        cluster = Cluster(hub, RunIndex(conn), instance=s.instance, beat=s.beat, lost_after=s.lost_after)
    auth = Auth(credentials, operator)
    grants = Grants(hub)
    lost: list[str] = []

    async def tell_list(public: dict[str, Any]) -> None:
        await hub.publish_json(RUNS_TOPIC, public, event="run", ephemeral=True)

    async def announce(row: RunRow) -> None:
        public = row.public()
        try:
            if cluster is not None:
                await cluster.publish_state(public)
                public = cluster.describe(public)
            await tell_list(public)
        except BackendUnavailable as exc:
            log.warning("cannot announce run %s: %s", row.id, exc)

    runner.on_change = announce

    def open_store() -> None:
        private_dir(data_dir)
        store.open()
        lost[:] = runner.recover()

    ex = ExecState(store, runner, auth, policy, hub, generated, heartbeat, grants, cluster)
    startup: list[Callable[[], Any]] = [open_store, hub.start, grants.start]
    shutdown: list[Callable[[], Any]] = [runner.shutdown, grants.close, hub.close, store.close]
    if cluster is not None:
        runner.id_prefix = cluster.id_prefix
        runner.mirror = cluster.mirror
        runner.is_orphan = cluster.is_orphan
        for name, action in ACTIONS.items():
            cluster.router.handle(name, functools.partial(action, ex))

        async def end_local_runs(reason: str) -> None:
            for run_id in list(runner.live):
                with contextlib.suppress(NotRunning):
                    runner.terminate(run_id, "system", reason)

        cluster.announce = tell_list
        cluster.end_local_runs = end_local_runs

        async def join() -> None:
            await cluster.start()
            # Runs this data dir's dead instances left running: their viewers, on any instance,
            # learn how they ended (the recovery wrote the same exit to the log file), unless
            # another instance has told them already (it saw the dead instance's process gone).
            for run_id in lost:
                row = store.get_run(run_id)
                if row is None or Cluster.owner_of(run_id) is None:
                    continue
                exit_info = {"status": row.status, "code": None, "signal": None, "duration_s": None,
                             "dropped_bytes": 0, "reason": "the server stopped while this run was running"}  # fmt: skip
                try:
                    known = await cluster.state(run_id)
                    if known is None or not Cluster.ended(known):
                        await hub.publish_json(run_topic(run_id), exit_info, event="exit")
                except BackendUnavailable as exc:
                    log.warning("cannot publish the end of lost run %s: %s", run_id, exc)
                await announce(row)

        startup.append(join)
        # The server closes the hubs before its lifespan shutdown: end the runs first, so their
        # exits reach the backend, and leave the cluster, while the backend is still there.
        hub.before_close = [runner.shutdown, grants.close, cluster.close]
        assert conn is not None
        shutdown.append(conn.close)
    return App(
        prefix=PREFIX,
        settings=s,
        closables=[hub],  # its before_close ends the runs and leaves the cluster first
        route_handlers=[
            *health_routes(),
            page_route(PREFIX, STATIC / "exec.html", "terminal page"),
            *routes_session.handlers,
            *routes_runs.handlers,
            *routes_tokens.handlers,
            static_router(PREFIX, STATIC, name="exec-static"),
            vendor_router(PREFIX, name="exec-vendor"),
        ],
        state=State({"exec_app": ex, "exec_auth": auth}),
        on_startup=startup,
        on_shutdown=shutdown,
        **app_defaults(
            "/exec",
            "remote_exec",
            "Run commands, stream their output over SSE, send input and signals.",
            max_body=MAX_BODY,
            exception_handlers={BackendUnavailable: _backend_down},
        ),
    )


def operator_token(app: Litestar) -> str:
    """The operator token of an app made by :func:`create_app` (generated or given)."""
    ex: ExecState = app.state.exec_app
    return ex.auth.operator_token


def login_lines(app: Litestar, base_url: str, *, generated: bool | None = None) -> list[str]:
    """What to print at startup. With a generated token, a URL that logs in (the token travels
    in the fragment, which browsers never send to the server); with a given token, just the URL.
    ``generated``: whether the caller made the token up; ``None``: whether :func:`create_app` did."""
    ex: ExecState = app.state.exec_app
    return login_text(base_url, ex.auth.operator_token, ex.token_generated if generated is None else generated)


def login_text(base_url: str, token: str, generated: bool) -> list[str]:
    """:func:`login_lines` before there is an app (``python -m remote_exec --workers N``)."""
    page_url = base_url.rstrip("/") + PREFIX + "/"
    if generated:
        return [
            f"remote_exec: serving {page_url}",
            "Open this URL to log in as the operator (it contains the token; anyone with it can run commands):",
            f"    {page_url}#token={token}",
            f"Or: curl -H 'Authorization: Bearer {token}' {base_url.rstrip('/')}{PREFIX}/runs",
        ]
    return [f"remote_exec: serving {page_url} (log in with the operator token you set)"]


MIN_TOKEN = 16  # characters: remote_exec.auth.Auth refuses a shorter operator token


def token_from_env(explicit: str | None = None, flag: str = "--token") -> str | None:
    """``explicit`` (``--token``) if given, else ``$REMOTE_EXEC_TOKEN``, else ``None``.

    A token too short to use is a ``ValueError`` whose message says where it came from and the
    rule, for the ``python -m`` commands to print as one line (not a traceback at start-up)."""
    token = explicit or os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < MIN_TOKEN:
        source = flag if explicit else f"${TOKEN_ENV}"
        raise ValueError(
            f"the exec operator token from {source} has {len(token)} characters; it must have at least {MIN_TOKEN} "
            "(or leave it unset to get a random one)"
        )
    return token
