"""``/exec/``: start commands, stream their output, send input and signals, share the session.

Every endpoint but the page, its static files and ``POST /exec/login`` needs a token (see
``auth.py``). Operators start runs and send input, signals and resizes; viewers only watch.
"""

from __future__ import annotations

import base64
import binascii
import os
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, delete, get, post
from litestar.datastructures import Cookie, State
from litestar.exceptions import (
    ClientException,
    NotFoundException,
    PermissionDeniedException,
    ServiceUnavailableException,
    ValidationException,
)
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import File, Stream

from shared.apps import app_defaults
from shared.backends.memory import MemoryBackend
from shared.encoding import encode_json
from shared.errors import errors
from shared.openapi import FileOperation
from shared.pages import static_router, vendor_router
from shared.responses import SSE_HEADERS, SSE_MEDIA_TYPE, last_event_id, sse_response
from shared.security import new_token

from .auth import COOKIE, SESSION_TTL_S, Auth, Principal, clean_name, operator_guard, viewer_guard
from .policy import Policy, PolicyRefusal
from .runlog import RunLog, parse_event_id
from .runner import SIGNALS, InputClosed, InputStalled, NotRunning, Runner, RunRequest, TooManyRuns
from .store import RunRow, Store
from .streams import HEARTBEAT_S, ExecHub, run_events

__all__ = ["TOKEN_ENV", "create_app", "login_lines", "operator_token"]

PREFIX = "/exec"
STATIC = Path(__file__).parent / "static"
TOKEN_ENV = "REMOTE_EXEC_TOKEN"
RUNS_TOPIC = "runs"
MAX_INPUT_BYTES = 64 * 1024
# The largest body is an input of MAX_INPUT_BYTES as JSON text, where escapes (\u0001) take up to
# six bytes per byte; anything bigger is refused with 413 before it is read.
MAX_BODY = 512 * 1024
MAX_VIEWER_TTL_S = 30 * 86400


@dataclass(slots=True)
class ExecState:
    store: Store
    runner: Runner
    auth: Auth
    policy: Policy
    hub: ExecHub
    token_generated: bool
    heartbeat: float


def _exec(state: State) -> ExecState:
    value: ExecState = state.exec_app
    return value


def _principal(request: Request[Any, Any, Any]) -> Principal:
    principal: Principal = request.state.principal
    return principal


def _addr(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else ""


def _run_or_404(ex: ExecState, run_id: str) -> RunRow:
    row = ex.store.get_run(run_id)
    if row is None:
        raise NotFoundException(f"no run {run_id!r}")
    return row


# -- request bodies ---------------------------------------------------------------------------


class StartBody(msgspec.Struct, forbid_unknown_fields=True):
    argv: list[str] | None = None
    command: str | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None
    pty: bool = False
    cols: int = 80
    rows: int = 24
    timeout_s: float | None = None


class InputBody(msgspec.Struct, forbid_unknown_fields=True):
    data: str = ""
    b64: str | None = None
    eof: bool = False
    input_id: str | None = None


class SignalBody(msgspec.Struct, forbid_unknown_fields=True):
    signal: str


class ResizeBody(msgspec.Struct, forbid_unknown_fields=True):
    cols: int
    rows: int


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    token: str
    name: str | None = None


class TokenBody(msgspec.Struct, forbid_unknown_fields=True):
    run_id: str | None = None
    ttl_s: float = 86400.0
    label: str | None = None


def _check_size(cols: int, rows: int) -> None:
    if not (2 <= cols <= 500 and 2 <= rows <= 200):
        raise ValidationException("terminal size must be 2-500 columns by 2-200 rows")


# -- the page and login -------------------------------------------------------------------------


@get("/exec/", media_type="text/html", operation_class=FileOperation)
async def page() -> File:
    """The terminal page (HTML; its scripts and styles are under ``/exec/static/``)."""
    return File(STATIC / "exec.html", content_disposition_type="inline", media_type="text/html")


@post("/exec/login", status_code=200, raises=errors(401, 403, 413))
async def login(request: Request[Any, Any, Any], data: JSONBody[LoginBody], state: State) -> Response[dict[str, Any]]:
    """Exchange a token for an HttpOnly session cookie (the page does this once)."""
    ex = _exec(state)
    try:
        principal, sid = ex.auth.login(data.token.strip(), data.name)
    except ValueError as exc:
        raise ValidationException(str(exc)) from exc
    ex.store.audit(principal.name, principal.role, _addr(request), "login", principal.run_id)
    cookie = Cookie(
        key=COOKIE,
        value=sid,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=SESSION_TTL_S,
    )
    return Response(principal.public(), cookies=[cookie])


@post("/exec/logout", status_code=200, raises=errors(403))
async def logout(request: Request[Any, Any, Any], state: State) -> Response[dict[str, bool]]:
    _exec(state).auth.logout(request.cookies.get(COOKIE))
    return Response({"ok": True}, cookies=[Cookie(key=COOKIE, value="", path=PREFIX, max_age=0, httponly=True)])


@get("/exec/me", guards=[viewer_guard], raises=errors(401))
async def me(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return _principal(request).public()


@get("/exec/policy", guards=[operator_guard], raises=errors(401, 403))
async def get_policy(state: State) -> dict[str, Any]:
    return _exec(state).policy.summary()


# -- runs ----------------------------------------------------------------------------------------


@get("/exec/runs", guards=[viewer_guard], raises=errors(401))
async def list_runs(
    request: Request[Any, Any, Any], state: State, limit: FromQuery[int] = 200
) -> dict[str, list[dict[str, Any]]]:
    """Runs, newest first (status, command, owner, start, duration, exit code)."""
    ex = _exec(state)
    principal = _principal(request)
    if not 1 <= limit <= 1000:
        raise ValidationException("limit must be between 1 and 1000")
    rows = ex.store.list_runs(limit)
    if principal.run_id is not None:
        rows = [r for r in rows if r.id == principal.run_id]
    return {"runs": [r.public() for r in rows]}


@post("/exec/runs", guards=[operator_guard], status_code=201, raises=errors(401, 403, 413, 429, 503))
async def start_run(request: Request[Any, Any, Any], data: JSONBody[StartBody], state: State) -> dict[str, Any]:
    ex = _exec(state)
    principal = _principal(request)
    addr = _addr(request)
    policy = ex.policy
    try:
        if (data.argv is None) == (data.command is None):
            raise ValueError('send exactly one of "argv" (a list) or "command" (a shell line)')
        _check_size(data.cols, data.rows)
        if data.argv is not None:
            argv = list(data.argv)
            if any("\0" in a for a in argv):
                raise ValueError("argv items must not contain NUL")
            shell = False
        else:
            assert data.command is not None
            argv = policy.shell_argv(data.command)
            shell = True
        env = policy.build_env(data.env)
        exe = policy.shell_path if shell else policy.resolve_command(argv, env)
        cwd = policy.resolve_cwd(data.cwd)
        timeout_s = policy.timeout(data.timeout_s)
    except PolicyRefusal as exc:
        ex.store.audit(
            principal.name, principal.role, addr, "refused", None,
            argv=data.argv, command=data.command, cwd=data.cwd, reason=str(exc),
        )  # fmt: skip
        raise PermissionDeniedException(str(exc)) from exc
    except ValueError as exc:
        raise ValidationException(str(exc)) from exc
    req = RunRequest(
        argv=argv,
        exe=exe,
        command=data.command if shell and data.command is not None else shlex.join(argv),
        shell=shell,
        cwd=cwd,
        env=env,
        env_keys=sorted(data.env or {}),
        pty=data.pty,
        cols=data.cols,
        rows=data.rows,
        timeout_s=timeout_s,
        owner=principal.name,
        addr=addr,
        role=principal.role,
    )
    try:
        row = await ex.runner.start(req)
    except TooManyRuns as exc:
        raise ClientException(str(exc), status_code=429) from exc
    except NotRunning as exc:
        raise ServiceUnavailableException(str(exc)) from exc
    return row.public()


@get("/exec/runs/{run_id:str}", guards=[viewer_guard], raises=errors(401, 403, 404))
async def get_run(run_id: FromPath[str], state: State) -> dict[str, Any]:
    ex = _exec(state)
    row = _run_or_404(ex, run_id)
    live = ex.runner.live.get(run_id)
    return row.public() | {"viewers": live.viewers if live is not None else 0}


@get(
    "/exec/runs/{run_id:str}/events",
    guards=[viewer_guard],
    media_type="text/event-stream",
    raises=errors(401, 403, 404, 503),
    responses={
        204: ResponseSpec(None, description="Last-Event-ID is the end of a finished run: nothing more will come")
    },
)
async def run_stream(request: Request[Any, Any, Any], run_id: FromPath[str], state: State) -> Response[Any]:
    """The run's output from the start (or from Last-Event-ID), live, then ``exit``."""
    ex = _exec(state)
    if ex.hub.closing:
        raise ServiceUnavailableException("server is shutting down; reconnect shortly", headers={"Retry-After": "1"})
    row = _run_or_404(ex, run_id)
    path = ex.runner.log_path(run_id)
    if not path.exists():
        raise NotFoundException(f"the output log of run {run_id} is missing")
    live = ex.runner.live.get(run_id)
    start, reset = 0, False
    resume = last_event_id(request)
    if resume:
        offset = parse_event_id(resume)
        if live is not None:
            valid = offset is not None and live.log.is_boundary(offset)
        else:
            with RunLog(path) as runlog:
                valid = offset is not None and runlog.is_boundary(offset)
                if valid and offset == runlog.size:
                    # Everything, exit included, was delivered: 204 tells EventSource to stop.
                    return Response(content=b"", status_code=204, headers=SSE_HEADERS)
        if valid and offset is not None:
            start = offset
        else:
            reset = True
    prelude = encode_json({"run": row.public(), "you": _principal(request).public()}, event="run")
    return Stream(
        run_events(ex.hub, run_id, start=start, reset=reset, prelude=prelude, heartbeat=ex.heartbeat),
        media_type=SSE_MEDIA_TYPE,
        headers=SSE_HEADERS,
    )


@get(
    "/exec/runs/{run_id:str}/output",
    guards=[viewer_guard],
    media_type="application/octet-stream",
    raises=errors(401, 403, 404),
)
async def run_output(run_id: FromPath[str], state: State, stream: FromQuery[str] = "all") -> Stream:
    """The raw bytes a run printed: ``stream=stdout``, ``stderr`` or ``all`` (interleaved)."""
    ex = _exec(state)
    _run_or_404(ex, run_id)
    kinds = {"stdout": frozenset({b"o"}), "stderr": frozenset({b"e"}), "all": frozenset({b"o", b"e"})}.get(stream)
    if kinds is None:
        raise ValidationException("stream must be stdout, stderr or all")
    path = ex.runner.log_path(run_id)
    if not path.exists():
        raise NotFoundException(f"the output log of run {run_id} is missing")
    return Stream(_raw_output(path, kinds), media_type="application/octet-stream")


async def _raw_output(path: Path, kinds: frozenset[bytes]) -> AsyncIterator[bytes]:
    with RunLog(path) as runlog:
        pos = 0
        while True:
            frames = runlog.read(pos)
            if not frames:
                return
            pos = frames[-1].end
            chunk = b"".join(f.payload for f in frames if f.kind in kinds)
            if chunk:
                yield chunk


def _live_error(ex: ExecState, run_id: str, exc: Exception) -> Exception:
    _run_or_404(ex, run_id)
    return ClientException(str(exc), status_code=409)


@post(
    "/exec/runs/{run_id:str}/input",
    guards=[operator_guard],
    status_code=200,
    raises=errors(401, 403, 404, 409, 413, 503),
)
async def send_input(
    request: Request[Any, Any, Any], run_id: FromPath[str], data: JSONBody[InputBody], state: State
) -> dict[str, Any]:
    """Bytes to the run's stdin (``data`` text or ``b64``), ``eof`` to close it; ``input_id``
    makes a retry safe: the same id is delivered once."""
    ex = _exec(state)
    if data.b64 is not None:
        if data.data:
            raise ValidationException('send "data" or "b64", not both')
        try:
            payload = base64.b64decode(data.b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValidationException("b64 is not valid base64") from exc
    else:
        payload = data.data.encode("utf-8", "surrogateescape")
    if len(payload) > MAX_INPUT_BYTES:
        raise ClientException(f"input is limited to {MAX_INPUT_BYTES} bytes per request", status_code=413)
    if data.input_id is not None and not 1 <= len(data.input_id) <= 100:
        raise ValidationException("input_id must be 1-100 characters")
    if not payload and not data.eof:
        raise ValidationException('nothing to send: give "data" (or "b64") and/or "eof": true')
    try:
        result = await ex.runner.send_input(run_id, payload, data.eof, data.input_id)
    except (NotRunning, InputClosed) as exc:
        raise _live_error(ex, run_id, exc) from exc
    except InputStalled as exc:
        raise ServiceUnavailableException(str(exc)) from exc
    if not result.get("duplicate"):
        principal = _principal(request)
        ex.store.audit(
            principal.name, principal.role, _addr(request), "input", run_id, bytes=len(payload), eof=data.eof
        )
    return result


@post(
    "/exec/runs/{run_id:str}/signal", guards=[operator_guard], status_code=200, raises=errors(401, 403, 404, 409, 413)
)
async def send_signal(
    request: Request[Any, Any, Any], run_id: FromPath[str], data: JSONBody[SignalBody], state: State
) -> dict[str, Any]:
    ex = _exec(state)
    name = data.signal.upper().removeprefix("SIG")
    if name not in SIGNALS:
        raise ValidationException(f"unknown signal {data.signal!r}: use one of {', '.join(SIGNALS)}")
    principal = _principal(request)
    try:
        ex.runner.send_signal(run_id, name, principal.name)
    except NotRunning as exc:
        raise _live_error(ex, run_id, exc) from exc
    ex.store.audit(principal.name, principal.role, _addr(request), "signal", run_id, signal=name)
    return {"signal": name}


@post("/exec/runs/{run_id:str}/terminate", guards=[operator_guard], status_code=202, raises=errors(401, 403, 404, 409))
async def terminate(request: Request[Any, Any, Any], run_id: FromPath[str], state: State) -> dict[str, Any]:
    """TERM to the whole process tree, KILL after the policy's grace period; ``exit`` follows."""
    ex = _exec(state)
    principal = _principal(request)
    try:
        ex.runner.terminate(run_id, principal.name)
    except NotRunning as exc:
        raise _live_error(ex, run_id, exc) from exc
    ex.store.audit(principal.name, principal.role, _addr(request), "terminate", run_id)
    return {"terminating": run_id, "grace_s": ex.policy.kill_grace_s}


@post(
    "/exec/runs/{run_id:str}/resize", guards=[operator_guard], status_code=200, raises=errors(401, 403, 404, 409, 413)
)
async def resize(run_id: FromPath[str], data: JSONBody[ResizeBody], state: State) -> dict[str, int]:
    ex = _exec(state)
    _check_size(data.cols, data.rows)
    try:
        ex.runner.resize(run_id, data.cols, data.rows)
    except NotRunning as exc:
        raise _live_error(ex, run_id, exc) from exc
    except ValueError as exc:
        raise ClientException(str(exc), status_code=409) from exc
    return {"cols": data.cols, "rows": data.rows}


@get("/exec/events", guards=[viewer_guard], media_type="text/event-stream", raises=errors(401, 403, 503))
async def list_events(request: Request[Any, Any, Any], state: State) -> Stream:
    """Run-list changes (a run started or ended) as ``run`` events; not replayed: on (re)connect,
    fetch ``GET /exec/runs``."""
    if _principal(request).run_id is not None:
        raise PermissionDeniedException("this viewer token only gives access to one run")
    return sse_response(_exec(state).hub, RUNS_TOPIC)


# -- sharing and audit ----------------------------------------------------------------------------


@post("/exec/tokens", guards=[operator_guard], status_code=201, raises=errors(401, 403, 404, 413))
async def mint_token(request: Request[Any, Any, Any], data: JSONBody[TokenBody], state: State) -> dict[str, Any]:
    """A read-only viewer token, for one run (``run_id``) or all; shown once, stored hashed."""
    ex = _exec(state)
    if data.run_id is not None:
        _run_or_404(ex, data.run_id)
    if not 60 <= data.ttl_s <= MAX_VIEWER_TTL_S:
        raise ValidationException(f"ttl_s must be between 60 and {MAX_VIEWER_TTL_S} seconds")
    try:
        label = clean_name(data.label, "shared")
    except ValueError as exc:
        raise ValidationException(str(exc).replace("name", "label", 1)) from exc
    principal = _principal(request)
    token_id, token, expires_at = ex.auth.mint_viewer(
        run_id=data.run_id, ttl_s=data.ttl_s, label=label, created_by=principal.name
    )
    ex.store.audit(principal.name, principal.role, _addr(request), "mint-viewer-token", data.run_id, token_id=token_id)
    url = f"{PREFIX}/#token={token}" + (f"&run={data.run_id}" if data.run_id else "")
    return {"id": token_id, "token": token, "run_id": data.run_id, "label": label, "expires_at": expires_at, "url": url}


@get("/exec/tokens", guards=[operator_guard], raises=errors(401, 403))
async def list_tokens(state: State) -> dict[str, list[dict[str, Any]]]:
    return {"tokens": _exec(state).store.list_viewer_tokens()}


@delete("/exec/tokens/{token_id:str}", guards=[operator_guard], status_code=200, raises=errors(401, 403, 404))
async def revoke_token(request: Request[Any, Any, Any], token_id: FromPath[str], state: State) -> dict[str, Any]:
    ex = _exec(state)
    if not ex.store.revoke_viewer_token(token_id):
        raise NotFoundException(f"no active viewer token {token_id!r}")
    principal = _principal(request)
    ex.store.audit(principal.name, principal.role, _addr(request), "revoke-viewer-token", None, token_id=token_id)
    return {"revoked": token_id}


@get("/exec/audit", guards=[operator_guard], raises=errors(401, 403))
async def audit_log(
    state: State, limit: FromQuery[int] = 200, run_id: FromQuery[str | None] = None
) -> dict[str, list[dict[str, Any]]]:
    """Who ran what, where, when, and how it ended; logins, input, signals, refusals. Newest first."""
    if not 1 <= limit <= 5000:
        raise ValidationException("limit must be between 1 and 5000")
    return {"entries": _exec(state).store.list_audit(limit, run_id)}


# -- the app ------------------------------------------------------------------------------------------


def create_app(
    data_dir: Path,
    *,
    token: str | None = None,
    policy: Policy | None = None,
    heartbeat: float = HEARTBEAT_S,
) -> Litestar:
    """The ``/exec/`` app. ``token`` is the operator token (``None``: a new random one; read it
    back with :func:`operator_token`). ``policy`` defaults to ``default_policy.toml``."""
    policy = policy or Policy.default()
    generated = token is None
    operator = token if token is not None else new_token(24)
    store = Store(data_dir / "exec.sqlite3")
    runner = Runner(data_dir, store, policy)
    hub = ExecHub(runner, MemoryBackend(max_events=1))
    auth = Auth(store, operator)

    async def announce(row: RunRow) -> None:
        await hub.publish_json(RUNS_TOPIC, row.public(), event="run", ephemeral=True)

    runner.on_change = announce

    def open_store() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        store.open()
        runner.recover()

    ex = ExecState(store, runner, auth, policy, hub, generated, heartbeat)
    return Litestar(
        route_handlers=[
            page,
            login,
            logout,
            me,
            get_policy,
            list_runs,
            start_run,
            get_run,
            run_stream,
            run_output,
            send_input,
            send_signal,
            terminate,
            resize,
            list_events,
            mint_token,
            list_tokens,
            revoke_token,
            audit_log,
            static_router(PREFIX, STATIC, name="exec-static"),
            vendor_router(PREFIX, name="exec-vendor"),
        ],
        state=State({"exec_app": ex, "exec_auth": auth, "sse_hubs": [hub]}),
        on_startup=[open_store, hub.start],
        on_shutdown=[runner.shutdown, hub.close, store.close],
        **app_defaults(
            "/exec",
            "remote_exec",
            "Run commands, stream their output over SSE, send input and signals.",
            max_body=MAX_BODY,
        ),
    )


def operator_token(app: Litestar) -> str:
    """The operator token of an app made by :func:`create_app` (generated or given)."""
    ex: ExecState = app.state.exec_app
    return ex.auth.operator_token


def login_lines(app: Litestar, base_url: str) -> list[str]:
    """What to print at startup. With a generated token, a URL that logs in (the token travels
    in the fragment, which browsers never send to the server); with a given token, just the URL."""
    ex: ExecState = app.state.exec_app
    page_url = base_url.rstrip("/") + PREFIX + "/"
    if ex.token_generated:
        return [
            f"remote_exec: serving {page_url}",
            "Open this URL to log in as the operator (it contains the token; anyone with it can run commands):",
            f"    {page_url}#token={ex.auth.operator_token}",
            f"Or: curl -H 'Authorization: Bearer {ex.auth.operator_token}' {base_url.rstrip('/')}{PREFIX}/runs",
        ]
    return [f"remote_exec: serving {page_url} (log in with the operator token you set)"]


def token_from_env(explicit: str | None = None) -> str | None:
    """``explicit`` (``--token``) if given, else ``$REMOTE_EXEC_TOKEN``, else ``None``."""
    return explicit or os.environ.get(TOKEN_ENV) or None
