"""``/exec/``: start commands, stream their output, send input and signals, share the session.

Every endpoint but the page, its static files and ``POST /exec/login`` needs a token (see
``auth.py``). Operators start runs and send input, signals and resizes; viewers only watch.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import functools
import logging
import os
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, delete, get, post
from litestar.datastructures import Cookie, State
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ServiceUnavailableException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import File, Stream

from shared.apps import app_defaults
from shared.backends import Backend, BackendUnavailable, MemoryBackend, UnknownEventId, from_url
from shared.backends.redis_url import is_redis_url
from shared.datadir import private_dir
from shared.encoding import encode_json
from shared.errors import error_response as errors_response
from shared.errors import errors
from shared.health import health_routes
from shared.hub import Hub, HubSettings, Subscription
from shared.metrics import count
from shared.openapi import FileOperation
from shared.pages import static_router, vendor_router
from shared.problems import Problem
from shared.responses import SSE_HEADERS, last_event_id, sse_response
from shared.security import COOKIE_PATH, new_token
from shared.throttle import FailureThrottle

from .auth import COOKIE, SESSION_TTL_S, Auth, Principal, clean_name, operator_guard, viewer_guard
from .cluster import UNREACHABLE, Cluster, OwnerWatch
from .credentials import Credentials, SqliteCredentials
from .grants import Grants, Hold
from .logtopics import RunLogBackend
from .mirror import run_topic
from .policy import Policy, PolicyRefusal
from .redis_conn import RedisConn
from .redis_credentials import RedisCredentials
from .run_index import RunIndex
from .runlog import EVENT_NAMES, RunLog
from .runner import SIGNALS, InputClosed, InputStalled, NotRunning, Runner, RunRequest, TooManyRuns
from .store import RUNNING, RunRow, Store
from .streams import HEARTBEAT_S
from .streams import run_stream as run_events

__all__ = ["TOKEN_ENV", "create_app", "login_lines", "login_text", "operator_token"]

PREFIX = "/exec"
STATIC = Path(__file__).parent / "static"
TOKEN_ENV = "REMOTE_EXEC_TOKEN"
RUNS_TOPIC = "exec:runs"
MAX_INPUT_BYTES = 64 * 1024
# The largest body is an input of MAX_INPUT_BYTES as JSON text, where escapes (\u0001) take up to
# six bytes per byte; anything bigger is refused with 413 before it is read.
MAX_BODY = 512 * 1024
MAX_VIEWER_TTL_S = 30 * 86400
LIST_TIMEOUT_S = 3.0

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ExecState:
    store: Store
    runner: Runner
    auth: Auth
    policy: Policy
    hub: Hub
    token_generated: bool
    heartbeat: float
    grants: Grants
    cluster: Cluster | None = None
    # Wrong log-ins per client address (issue 14.12): 10 a minute, then 429 for that address only.
    login_failures: FailureThrottle = field(default_factory=FailureThrottle)


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


def _unavailable(exc: BackendUnavailable) -> ServiceUnavailableException:
    return ServiceUnavailableException(f"the event store is unavailable: {exc}", headers={"Retry-After": "1"})


def _backend_down(request: Request[Any, Any, Any], exc: BackendUnavailable) -> Response[dict[str, Any]]:
    """Redis away while a guard or handler asked it (tokens, sessions, the run index): 503."""
    return errors_response(request, _unavailable(exc))


async def _find_run(ex: ExecState, run_id: str) -> dict[str, Any]:
    """A run's public row: from this instance's store, else (several instances) as its owner
    last published it, with ``instance``, ``here`` and, if its owner is gone, ``unreachable``."""
    row = ex.store.get_run(run_id)
    if ex.cluster is None:
        if row is None:
            raise NotFoundException(f"no run {run_id!r}")
        return row.public()
    if row is not None:
        return ex.cluster.describe(row.public())
    try:
        data = await ex.cluster.state(run_id)
    except BackendUnavailable as exc:
        raise _unavailable(exc) from exc
    if data is None:
        raise NotFoundException(f"no run {run_id!r}")
    return ex.cluster.describe(data)


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


@post("/exec/login", status_code=200, raises=errors(401, 403, 413, 429, 503))
async def login(request: Request[Any, Any, Any], data: JSONBody[LoginBody], state: State) -> Response[dict[str, Any]]:
    """Exchange a token for an HttpOnly session cookie (the page does this once)."""
    ex = _exec(state)
    addr = _addr(request)
    wait = ex.login_failures.wait(addr)
    if wait is not None:
        ex.store.audit("?", "none", addr, "login-throttled", None)
        raise TooManyRequestsException(
            f"too many wrong tokens from {addr}; try again in {wait} s (log-ins are throttled per client address)",
            headers={"Retry-After": str(wait)},
        )
    try:
        principal, sid = await ex.auth.login(data.token.strip(), data.name)
    except ValueError as exc:
        raise ValidationException(str(exc)) from exc
    except NotAuthorizedException:
        ex.login_failures.failed(addr)
        # Who tried, from where; never what they typed (it may be a real token with a typo).
        ex.store.audit("?", "none", addr, "login-failed", None, name=(data.name or "")[:64])
        raise
    ex.store.audit(principal.name, principal.role, _addr(request), "login", principal.run_id)
    cookie = Cookie(
        key=COOKIE,
        value=sid,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=SESSION_TTL_S,
    )
    return Response(principal.public(), cookies=[cookie])


@post("/exec/logout", status_code=200, raises=errors(403))
async def logout(request: Request[Any, Any, Any], state: State) -> Response[dict[str, bool]]:
    ex = _exec(state)
    grant = await ex.auth.logout(request.cookies.get(COOKIE))
    if grant is not None:
        await ex.grants.revoke(grant, "logged out")
    return Response({"ok": True}, cookies=[Cookie(key=COOKIE, value="", path=COOKIE_PATH, max_age=0, httponly=True)])


@get("/exec/me", guards=[viewer_guard], raises=errors(401))
async def me(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return _principal(request).public()


@get("/exec/policy", guards=[operator_guard], raises=errors(401, 403))
async def get_policy(state: State) -> dict[str, Any]:
    return _exec(state).policy.summary()


# -- runs ----------------------------------------------------------------------------------------


@get("/exec/runs", guards=[viewer_guard], raises=errors(401))
async def list_runs(request: Request[Any, Any, Any], state: State, limit: FromQuery[int] = 200) -> dict[str, Any]:
    """Runs, newest first (status, command, owner, start, duration, exit code). With several
    instances, every instance's runs (those of a dead one too, as ``unreachable`` or ``lost``),
    each with its ``instance``, and the live ``instances``."""
    ex = _exec(state)
    principal = _principal(request)
    if not 1 <= limit <= 1000:
        raise ValidationException("limit must be between 1 and 1000")
    if ex.cluster is None:
        rows = ex.store.list_runs(limit)
        if principal.run_id is not None:
            rows = [r for r in rows if r.id == principal.run_id]
        return {"runs": [r.public() for r in rows]}
    # The run index (every instance's runs, the dead ones' too), then ours, then what each live
    # instance says of its own runs (a run's owner has the last word on it), newest first.
    merged: dict[str, dict[str, Any]] = {}
    try:
        merged.update((r["id"], r) for r in await ex.cluster.index.latest(limit))
    except BackendUnavailable as exc:
        log.warning("cannot read the run index: %s", exc)
    merged.update((r.id, r.public()) for r in ex.store.list_runs(limit))
    answers = await ex.cluster.router.call_all("list", {"limit": limit}, timeout=LIST_TIMEOUT_S)
    for instance, answer in answers.items():
        if isinstance(answer, BaseException):
            log.warning("listing the runs of %s failed: %s", instance, answer)
            continue
        merged.update((r["id"], r) for r in answer["runs"] if Cluster.owner_of(r["id"]) == instance)
    found = [ex.cluster.describe(r) for r in merged.values() if principal.run_id in (None, r["id"])]
    found.sort(key=lambda r: float(r["started_at"]), reverse=True)
    return {"runs": found[:limit], "instances": list(answers)}


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
        if not shell:
            policy.check_args(argv, cwd)  # relative file arguments are taken from the run's cwd
        timeout_s = policy.timeout(data.timeout_s)
    except PolicyRefusal as exc:
        ex.store.audit(
            principal.name, principal.role, addr, "refused", None,
            argv=data.argv, command=data.command, cwd=data.cwd, reason=f"{exc.rule}: {exc}",
        )  # fmt: skip
        count("exec_runs", "outcome", "refused")
        raise PermissionDeniedException(str(exc), extra={"rule": exc.rule, "allow": exc.allow}) from exc
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
    except BackendUnavailable as exc:
        raise _unavailable(exc) from exc
    count("exec_runs", "outcome", "started" if row.status == RUNNING else "failed")
    return ex.cluster.describe(row.public()) if ex.cluster is not None else row.public()


@get("/exec/runs/{run_id:str}", guards=[viewer_guard], raises=errors(401, 403, 404, 503))
async def get_run(run_id: FromPath[str], state: State) -> dict[str, Any]:
    ex = _exec(state)
    row = await _find_run(ex, run_id)
    live = ex.runner.live.get(run_id)
    return row | {"viewers": live.viewers if live is not None else 0}


@get(
    "/exec/runs/{run_id:str}/events",
    guards=[viewer_guard],
    media_type="text/event-stream",
    raises=errors(401, 403, 404, 429, 503),
    responses={
        204: ResponseSpec(None, description="Last-Event-ID is the end of a finished run: nothing more will come")
    },
)
async def run_stream(request: Request[Any, Any, Any], run_id: FromPath[str], state: State) -> Response[Any]:
    """The run's output from the start (or from Last-Event-ID), live, then ``exit``."""
    ex = _exec(state)
    if not ex.hub.accepting:
        raise ServiceUnavailableException("server is shutting down; reconnect shortly", headers={"Retry-After": "1"})
    info = await _find_run(ex, run_id)
    if ex.cluster is None and not ex.runner.log_path(run_id).exists():
        raise NotFoundException(f"the output log of run {run_id} is missing")
    topic = run_topic(run_id)
    backend = ex.hub.backend
    resume = last_event_id(request)
    extra = b""
    try:
        if resume:
            try:
                await backend.read_after(topic, resume, 0)
            except UnknownEventId as exc:
                # Not an id of this run (or no longer kept): start over from the beginning. The
                # reset carries the origin, so the browser's next resume is one we can make.
                extra = encode_json(
                    {"reason": exc.reason, "latest_id": None}, event="reset", id=await backend.origin_id(topic)
                )
                resume = None
            else:
                if _ended(ex, run_id, info) and resume == await backend.latest_id(topic):
                    # Everything, exit included, was delivered: 204 tells EventSource to stop.
                    return Response(content=b"", status_code=204, headers=SSE_HEADERS)
        # The origin: everything the topic keeps, the run's first event included.
        start = resume or await backend.origin_id(topic)
    except BackendUnavailable as exc:
        raise _unavailable(exc) from exc
    watch = None
    cluster = ex.cluster
    if cluster is not None:
        owner = Cluster.owner_of(run_id)
        if owner is not None and owner != cluster.instance and info["status"] in (RUNNING, UNREACHABLE):
            # Watched while the run goes on: its viewers learn at once when its instance goes away.
            watch = OwnerWatch(cluster, owner)
            if info["status"] == UNREACHABLE:
                extra += watch.event()
    principal = _principal(request)
    prelude = encode_json({"run": info, "you": principal.public()}, event="run") + extra
    live = ex.runner.live.get(run_id) if cluster is None else None
    return run_events(ex.hub, topic, start, prelude, grants=ex.grants, principal=principal, live=live, owner=watch)


def _ended(ex: ExecState, run_id: str, info: dict[str, Any]) -> bool:
    if ex.cluster is not None:
        return Cluster.ended(info)
    return run_id not in ex.runner.live


@get(
    "/exec/runs/{run_id:str}/output",
    guards=[viewer_guard],
    media_type="application/octet-stream",
    raises=errors(401, 403, 404, 409, 503),
)
async def run_output(run_id: FromPath[str], state: State, stream: FromQuery[str] = "all") -> Stream:
    """The raw bytes a run printed: ``stream=stdout``, ``stderr`` or ``all`` (interleaved)."""
    ex = _exec(state)
    await _find_run(ex, run_id)
    kinds = {"stdout": frozenset({b"o"}), "stderr": frozenset({b"e"}), "all": frozenset({b"o", b"e"})}.get(stream)
    if kinds is None:
        raise ValidationException("stream must be stdout, stderr or all")
    path = ex.runner.log_path(run_id)
    if not path.exists():
        if ex.cluster is not None:
            # The log file is on the owner's disk; the run's topic has what the backend keeps.
            return Stream(await _topic_output(ex, run_id, kinds), media_type="application/octet-stream")
        raise NotFoundException(f"the output log of run {run_id} is missing")
    return Stream(_raw_output(path, kinds), media_type="application/octet-stream")


async def _topic_output(ex: ExecState, run_id: str, kinds: frozenset[bytes]) -> AsyncIterator[bytes]:
    names = {EVENT_NAMES[k] for k in kinds}
    backend, topic = ex.hub.backend, run_topic(run_id)
    try:
        first = await backend.read_after(topic, await backend.origin_id(topic), 500)
    except UnknownEventId as exc:
        raise ClientException(
            f"the start of run {run_id}'s output is no longer kept by the event store ({exc.reason}); "
            "the full log is on the instance that ran it",
            status_code=409,
        ) from exc
    except BackendUnavailable as exc:
        raise _unavailable(exc) from exc

    async def pages() -> AsyncIterator[bytes]:
        entries = first
        while entries:
            yield b"".join(_chunk_bytes(e.data) for e in entries if e.event in names)
            last = entries[-1].id
            if last is None:
                return
            try:
                entries = await backend.read_after(topic, last, 500)
            except (UnknownEventId, BackendUnavailable):
                return  # the response has started: it ends short

    return pages()


def _chunk_bytes(data: str) -> bytes:
    chunk = msgspec.json.decode(data)
    if "b64" in chunk:
        return base64.b64decode(chunk["b64"])
    return str(chunk.get("text", "")).encode("utf-8", "surrogateescape")


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


# -- actions on a run: done by the instance that runs it ----------------------------------------
#
# Each takes JSON-able params (the run id, the acting principal and address, the arguments), so
# that another instance can route it here with ``Router.call``; errors are HTTP exceptions, which
# reach the routing instance's client with their status and detail.


async def _do_input(ex: ExecState, p: dict[str, Any]) -> dict[str, Any]:
    run_id, payload, eof = p["run_id"], base64.b64decode(p["b64"]), bool(p["eof"])
    try:
        result = await ex.runner.send_input(run_id, payload, eof, p.get("input_id"))
    except (NotRunning, InputClosed) as exc:
        raise _live_error(ex, run_id, exc) from exc
    except InputStalled as exc:
        raise ServiceUnavailableException(str(exc)) from exc
    if not result.get("duplicate"):
        ex.store.audit(p["actor"], p["role"], p["addr"], "input", run_id, bytes=len(payload), eof=eof)
    return result


async def _do_signal(ex: ExecState, p: dict[str, Any]) -> dict[str, Any]:
    run_id, name = p["run_id"], p["signal"]
    try:
        ex.runner.send_signal(run_id, name, p["actor"])
    except NotRunning as exc:
        raise _live_error(ex, run_id, exc) from exc
    ex.store.audit(p["actor"], p["role"], p["addr"], "signal", run_id, signal=name)
    return {"signal": name}


async def _do_terminate(ex: ExecState, p: dict[str, Any]) -> dict[str, Any]:
    run_id = p["run_id"]
    try:
        ex.runner.terminate(run_id, p["actor"])
    except NotRunning as exc:
        raise _live_error(ex, run_id, exc) from exc
    ex.store.audit(p["actor"], p["role"], p["addr"], "terminate", run_id)
    return {"terminating": run_id, "grace_s": ex.policy.kill_grace_s}


async def _do_resize(ex: ExecState, p: dict[str, Any]) -> dict[str, Any]:
    run_id, cols, rows = p["run_id"], int(p["cols"]), int(p["rows"])
    try:
        ex.runner.resize(run_id, cols, rows)
    except NotRunning as exc:
        raise _live_error(ex, run_id, exc) from exc
    except ValueError as exc:
        raise ClientException(str(exc), status_code=409) from exc
    return {"cols": cols, "rows": rows}


async def _do_list(ex: ExecState, p: dict[str, Any]) -> dict[str, Any]:
    return {"runs": [r.public() for r in ex.store.list_runs(int(p["limit"]))]}


Action = Callable[[ExecState, dict[str, Any]], Awaitable[dict[str, Any]]]
ACTIONS: dict[str, Action] = {
    "input": _do_input,
    "signal": _do_signal,
    "terminate": _do_terminate,
    "resize": _do_resize,
    "list": _do_list,
}


async def _act(ex: ExecState, request: Request[Any, Any, Any], action: str, run_id: str, **args: Any) -> dict[str, Any]:
    """Do ``action`` here if the run is ours, else on the instance that runs it."""
    principal = _principal(request)
    params = {"run_id": run_id, "actor": principal.name, "role": principal.role, "addr": _addr(request), **args}
    cluster = ex.cluster
    owner = cluster.owner_of(run_id) if cluster is not None else None
    if cluster is None or owner is None or owner == cluster.instance:
        return await ACTIONS[action](ex, params)
    try:
        result: dict[str, Any] = await cluster.router.call(owner, action, params)
    except Problem as exc:
        if exc.status_code not in (503, 504) or cluster.alive(owner):
            raise
        info = await _find_run(ex, run_id)  # 404 for an id nobody ever ran
        if Cluster.ended(info):
            raise ClientException(f"run {run_id} has finished ({info['status']})", status_code=409) from None
        raise ServiceUnavailableException(
            f"run {run_id} runs on instance {owner}, which is not reachable (it stopped or crashed): "
            "its input, signals and resizes cannot be delivered",
            headers={"Retry-After": "5"},
        ) from None
    return result


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
    b64 = base64.b64encode(payload).decode("ascii")
    return await _act(ex, request, "input", run_id, b64=b64, eof=data.eof, input_id=data.input_id)


@post(
    "/exec/runs/{run_id:str}/signal",
    guards=[operator_guard],
    status_code=200,
    raises=errors(401, 403, 404, 409, 413, 503),
)
async def send_signal(
    request: Request[Any, Any, Any], run_id: FromPath[str], data: JSONBody[SignalBody], state: State
) -> dict[str, Any]:
    name = data.signal.upper().removeprefix("SIG")
    if name not in SIGNALS:
        raise ValidationException(f"unknown signal {data.signal!r}: use one of {', '.join(SIGNALS)}")
    return await _act(_exec(state), request, "signal", run_id, signal=name)


@post(
    "/exec/runs/{run_id:str}/terminate",
    guards=[operator_guard],
    status_code=202,
    raises=errors(401, 403, 404, 409, 503),
)
async def terminate(request: Request[Any, Any, Any], run_id: FromPath[str], state: State) -> dict[str, Any]:
    """TERM to the whole process tree, KILL after the policy's grace period; ``exit`` follows."""
    return await _act(_exec(state), request, "terminate", run_id)


@post(
    "/exec/runs/{run_id:str}/resize",
    guards=[operator_guard],
    status_code=200,
    raises=errors(401, 403, 404, 409, 413, 503),
)
async def resize(
    request: Request[Any, Any, Any], run_id: FromPath[str], data: JSONBody[ResizeBody], state: State
) -> dict[str, Any]:
    _check_size(data.cols, data.rows)
    return await _act(_exec(state), request, "resize", run_id, cols=data.cols, rows=data.rows)


@get("/exec/events", guards=[viewer_guard], media_type="text/event-stream", raises=errors(401, 403, 429, 503))
async def list_events(request: Request[Any, Any, Any], state: State) -> Stream:
    """Run-list changes (a run started or ended) as ``run`` events; not replayed: on (re)connect,
    fetch ``GET /exec/runs``."""
    principal = _principal(request)
    if principal.run_id is not None:
        raise PermissionDeniedException("this viewer token only gives access to one run")
    ex = _exec(state)
    holds: list[Hold] = []

    def opened(sub: Subscription) -> None:
        # Held from when the subscription opens to when the body ends (on_close), so that a
        # stream refused before it began (429) holds nothing.
        hold = ex.grants.hold(principal)
        holds.append(hold)
        hold.on_end(lambda: sub.close("revoked"))

    def farewell(_: Subscription) -> bytes | None:
        return holds[0].farewell() if holds and holds[0].reason is not None else None

    async def closed() -> None:
        for hold in holds:
            hold.release()

    return sse_response(ex.hub, RUNS_TOPIC, on_open=opened, farewell=farewell, on_close=closed)


# -- sharing and audit ----------------------------------------------------------------------------


@post("/exec/tokens", guards=[operator_guard], status_code=201, raises=errors(401, 403, 404, 413, 503))
async def mint_token(request: Request[Any, Any, Any], data: JSONBody[TokenBody], state: State) -> dict[str, Any]:
    """A read-only viewer token, for one run (``run_id``) or all; shown once, stored hashed."""
    ex = _exec(state)
    if data.run_id is not None:
        await _find_run(ex, data.run_id)
    if not 60 <= data.ttl_s <= MAX_VIEWER_TTL_S:
        raise ValidationException(f"ttl_s must be between 60 and {MAX_VIEWER_TTL_S} seconds")
    try:
        label = clean_name(data.label, "shared")
    except ValueError as exc:
        raise ValidationException(str(exc).replace("name", "label", 1)) from exc
    principal = _principal(request)
    token_id, token, expires_at = await ex.auth.mint_viewer(
        run_id=data.run_id, ttl_s=data.ttl_s, label=label, created_by=principal.name
    )
    ex.store.audit(principal.name, principal.role, _addr(request), "mint-viewer-token", data.run_id, token_id=token_id)
    url = f"{PREFIX}/#token={token}" + (f"&run={data.run_id}" if data.run_id else "")
    return {"id": token_id, "token": token, "run_id": data.run_id, "label": label, "expires_at": expires_at, "url": url}


@get("/exec/tokens", guards=[operator_guard], raises=errors(401, 403))
async def list_tokens(state: State) -> dict[str, list[dict[str, Any]]]:
    return {"tokens": [t.public() for t in await _exec(state).auth.credentials.list_tokens()]}


@delete("/exec/tokens/{token_id:str}", guards=[operator_guard], status_code=200, raises=errors(401, 403, 404))
async def revoke_token(request: Request[Any, Any, Any], token_id: FromPath[str], state: State) -> dict[str, Any]:
    ex = _exec(state)
    if not await ex.auth.credentials.revoke_token(token_id):
        raise NotFoundException(f"no active viewer token {token_id!r}")
    # Its open streams end too, on every instance, each with a last "revoked" event.
    await ex.grants.revoke(f"viewer:{token_id}", "revoked")
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
    hub_settings: HubSettings | None = None,
    backend: Backend | str | None = None,
    instance: str | None = None,
    beat: float = 2.0,
    lost_after: float = 30.0,
) -> Litestar:
    """The ``/exec/`` app. ``token`` is the operator token (``None``: a new random one; read it
    back with :func:`operator_token`). ``policy`` defaults to ``default_policy.toml``.
    ``hub_settings`` sets the stream limits (``max_streams_per_client`` counts run streams too).

    ``backend`` (a ``Backend`` or a URL; default: in memory) shared by several instances, e.g.
    ``redis://127.0.0.1:6379/0``, makes this one instance of several: run output goes through the
    backend so any instance serves any run, and actions on a run are routed to the instance that
    runs it. ``instance`` names this one (default: host, pid and a random suffix); ``beat`` is
    how often it tells the others it is alive (unreachable after three missed beats);
    ``lost_after`` how long an instance of another host may be silent before its running runs are
    declared lost (on this host, as soon as its process is gone). Viewer tokens and sessions are
    then kept in Redis, so every instance knows them."""
    # The data dir holds the session keys, tokens and every run's log: no run may read it.
    policy = (policy or Policy.default()).protecting(data_dir)
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
        cluster = Cluster(hub, RunIndex(conn), instance=instance, beat=beat, lost_after=lost_after)
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
    return Litestar(
        route_handlers=[
            *health_routes(),
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


def login_lines(app: Litestar, base_url: str) -> list[str]:
    """What to print at startup. With a generated token, a URL that logs in (the token travels
    in the fragment, which browsers never send to the server); with a given token, just the URL."""
    ex: ExecState = app.state.exec_app
    return login_text(base_url, ex.auth.operator_token, ex.token_generated)


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
