"""Runs: list, start, look at, stream their output, send input, signals and resizes."""

from __future__ import annotations

import base64
import binascii
import logging
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import (
    ClientException,
    NotFoundException,
    PermissionDeniedException,
    ServiceUnavailableException,
    ValidationException,
)
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Stream

from shared.backends import BackendUnavailable, UnknownEventId
from shared.encoding import encode_json
from shared.errors import errors
from shared.hub import Subscription
from shared.metrics import count
from shared.responses import SSE_HEADERS, last_event_id, sse_response

from .actions import act
from .auth import operator_guard, viewer_guard
from .cluster import UNREACHABLE, Cluster, OwnerWatch
from .context import RUNS_TOPIC, ExecState, address_of, exec_of, find_run, principal_of, unavailable
from .grants import Hold
from .mirror import run_topic
from .policy import PolicyRefusal
from .runlog import EVENT_NAMES, RunLog
from .runner import SIGNALS, NotRunning, RunRequest, TooManyRuns
from .store import RUNNING
from .streams import run_stream as run_events

__all__ = ["handlers"]

MAX_INPUT_BYTES = 64 * 1024
LIST_TIMEOUT_S = 3.0

log = logging.getLogger(__name__)


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


def _check_size(cols: int, rows: int) -> None:
    if not (2 <= cols <= 500 and 2 <= rows <= 200):
        raise ValidationException("terminal size must be 2-500 columns by 2-200 rows")


@get("/exec/runs", guards=[viewer_guard], raises=errors(401))
async def list_runs(request: Request[Any, Any, Any], state: State, limit: FromQuery[int] = 200) -> dict[str, Any]:
    """Runs, newest first (status, command, owner, start, duration, exit code). With several
    instances, every instance's runs (those of a dead one too, as ``unreachable`` or ``lost``),
    each with its ``instance``, and the live ``instances``."""
    ex = exec_of(state)
    principal = principal_of(request)
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
    ex = exec_of(state)
    principal = principal_of(request)
    addr = address_of(request)
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
        raise unavailable(exc) from exc
    count("exec_runs", "outcome", "started" if row.status == RUNNING else "failed")
    return ex.cluster.describe(row.public()) if ex.cluster is not None else row.public()


@get("/exec/runs/{run_id:str}", guards=[viewer_guard], raises=errors(401, 403, 404, 503))
async def get_run(run_id: FromPath[str], state: State) -> dict[str, Any]:
    ex = exec_of(state)
    row = await find_run(ex, run_id)
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
    ex = exec_of(state)
    if not ex.hub.accepting:
        raise ServiceUnavailableException("server is shutting down; reconnect shortly", headers={"Retry-After": "1"})
    info = await find_run(ex, run_id)
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
        raise unavailable(exc) from exc
    watch = None
    cluster = ex.cluster
    if cluster is not None:
        owner = Cluster.owner_of(run_id)
        if owner is not None and owner != cluster.instance and info["status"] in (RUNNING, UNREACHABLE):
            # Watched while the run goes on: its viewers learn at once when its instance goes away.
            watch = OwnerWatch(cluster, owner)
            if info["status"] == UNREACHABLE:
                extra += watch.event()
    principal = principal_of(request)
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
    ex = exec_of(state)
    await find_run(ex, run_id)
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
        raise unavailable(exc) from exc

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
    ex = exec_of(state)
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
    return await act(ex, request, "input", run_id, b64=b64, eof=data.eof, input_id=data.input_id)


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
    return await act(exec_of(state), request, "signal", run_id, signal=name)


@post(
    "/exec/runs/{run_id:str}/terminate",
    guards=[operator_guard],
    status_code=202,
    raises=errors(401, 403, 404, 409, 503),
)
async def terminate(request: Request[Any, Any, Any], run_id: FromPath[str], state: State) -> dict[str, Any]:
    """TERM to the whole process tree, KILL after the policy's grace period; ``exit`` follows."""
    return await act(exec_of(state), request, "terminate", run_id)


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
    return await act(exec_of(state), request, "resize", run_id, cols=data.cols, rows=data.rows)


@get("/exec/events", guards=[viewer_guard], media_type="text/event-stream", raises=errors(401, 403, 429, 503))
async def list_events(request: Request[Any, Any, Any], state: State) -> Stream:
    """Run-list changes (a run started or ended) as ``run`` events; not replayed: on (re)connect,
    fetch ``GET /exec/runs``."""
    principal = principal_of(request)
    if principal.run_id is not None:
        raise PermissionDeniedException("this viewer token only gives access to one run")
    ex = exec_of(state)
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


handlers = [
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
]
