"""Actions on a run, done by the instance that runs it.

Each takes JSON-able params (the run id, the acting principal and address, the arguments), so
that another instance can route it here with ``Router.call``; errors are HTTP exceptions, which
reach the routing instance's client with their status and detail.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request
from litestar.exceptions import (
    ClientException,
    ServiceUnavailableException,
)

from shared.problems import Problem

from .cluster import Cluster
from .context import ExecState, address_of, find_run, principal_of, run_or_404
from .runner import InputClosed, InputStalled, NotRunning

__all__ = ["ACTIONS", "act", "live_error"]


def live_error(ex: ExecState, run_id: str, exc: Exception) -> Exception:
    run_or_404(ex, run_id)
    return ClientException(str(exc), status_code=409)


async def _do_input(ex: ExecState, p: dict[str, Any]) -> dict[str, Any]:
    run_id, payload, eof = p["run_id"], base64.b64decode(p["b64"]), bool(p["eof"])
    try:
        result = await ex.runner.send_input(run_id, payload, eof, p.get("input_id"))
    except (NotRunning, InputClosed) as exc:
        raise live_error(ex, run_id, exc) from exc
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
        raise live_error(ex, run_id, exc) from exc
    ex.store.audit(p["actor"], p["role"], p["addr"], "signal", run_id, signal=name)
    return {"signal": name}


async def _do_terminate(ex: ExecState, p: dict[str, Any]) -> dict[str, Any]:
    run_id = p["run_id"]
    try:
        ex.runner.terminate(run_id, p["actor"])
    except NotRunning as exc:
        raise live_error(ex, run_id, exc) from exc
    ex.store.audit(p["actor"], p["role"], p["addr"], "terminate", run_id)
    return {"terminating": run_id, "grace_s": ex.policy.kill_grace_s}


async def _do_resize(ex: ExecState, p: dict[str, Any]) -> dict[str, Any]:
    run_id, cols, rows = p["run_id"], int(p["cols"]), int(p["rows"])
    try:
        ex.runner.resize(run_id, cols, rows)
    except NotRunning as exc:
        raise live_error(ex, run_id, exc) from exc
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


async def act(ex: ExecState, request: Request[Any, Any, Any], action: str, run_id: str, **args: Any) -> dict[str, Any]:
    """Do ``action`` here if the run is ours, else on the instance that runs it."""
    principal = principal_of(request)
    params = {"run_id": run_id, "actor": principal.name, "role": principal.role, "addr": address_of(request), **args}
    cluster = ex.cluster
    owner = cluster.owner_of(run_id) if cluster is not None else None
    if cluster is None or owner is None or owner == cluster.instance:
        return await ACTIONS[action](ex, params)
    try:
        result: dict[str, Any] = await cluster.router.call(owner, action, params)
    except Problem as exc:
        if exc.status_code not in (503, 504) or cluster.alive(owner):
            raise
        info = await find_run(ex, run_id)  # 404 for an id nobody ever ran
        if Cluster.ended(info):
            raise ClientException(f"run {run_id} has finished ({info['status']})", status_code=409) from None
        raise ServiceUnavailableException(
            f"run {run_id} runs on instance {owner}, which is not reachable (it stopped or crashed): "
            "its input, signals and resizes cannot be delivered",
            headers={"Retry-After": "5"},
        ) from None
    return result
