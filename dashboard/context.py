"""What every handler needs: the app's parts, in one object in the app's state."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.datastructures import State

from shared.correlation import Correlator
from shared.hub import Hub
from shared.routing import Router

from .audit import AuditLog
from .auth import ControlAuth
from .cluster import Cluster
from .commands import Commander
from .hosts import Hosts
from .sampler import Sampler
from .sessions import LoginSessions
from .settings import DashboardSettings

__all__ = ["Dashboard", "dashboard_of"]


@dataclass(slots=True, eq=False)
class Dashboard:
    """The parts of one dashboard instance (made by ``create_app``, never changed after)."""

    settings: DashboardSettings
    hub: Hub
    sampler: Sampler
    auth: ControlAuth
    logins: LoginSessions
    correlator: Correlator
    audit: AuditLog
    commander: Commander
    router: Router
    hosts: Hosts
    cluster: Cluster


def dashboard_of(state: State) -> Dashboard:
    dashboard: Dashboard = state.dashboard
    return dashboard
