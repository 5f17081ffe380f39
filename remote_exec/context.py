"""What every handler needs: the app's parts (``ExecState``), who asks, and a run by its id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.exceptions import (
    NotFoundException,
    ServiceUnavailableException,
)

from shared.backends import BackendUnavailable
from shared.hub import Hub
from shared.throttle import FailureThrottle

from .auth import Auth, Principal
from .cluster import Cluster
from .grants import Grants
from .policy import Policy
from .runner import Runner
from .store import RunRow, Store

__all__ = [
    "PREFIX",
    "RUNS_TOPIC",
    "ExecState",
    "address_of",
    "exec_of",
    "find_run",
    "principal_of",
    "run_or_404",
    "unavailable",
]


PREFIX = "/exec"
RUNS_TOPIC = "exec:runs"


@dataclass(slots=True)
class ExecState:
    """The parts of one remote exec instance (made by ``create_app``), in its state as ``exec_app``."""

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


def exec_of(state: State) -> ExecState:
    value: ExecState = state.exec_app
    return value


def principal_of(request: Request[Any, Any, Any]) -> Principal:
    principal: Principal = request.state.principal
    return principal


def address_of(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else ""


def run_or_404(ex: ExecState, run_id: str) -> RunRow:
    row = ex.store.get_run(run_id)
    if row is None:
        raise NotFoundException(f"no run {run_id!r}")
    return row


def unavailable(exc: BackendUnavailable) -> ServiceUnavailableException:
    return ServiceUnavailableException(f"the event store is unavailable: {exc}", headers={"Retry-After": "1"})


async def find_run(ex: ExecState, run_id: str) -> dict[str, Any]:
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
        raise unavailable(exc) from exc
    if data is None:
        raise NotFoundException(f"no run {run_id!r}")
    return ex.cluster.describe(data)
