"""The options of remote exec, in one place so tests and deployments can change them."""

from __future__ import annotations

from dataclasses import dataclass

from .policy import Policy
from .streams import HEARTBEAT_S

__all__ = ["ExecSettings"]


@dataclass(frozen=True, slots=True)
class ExecSettings:
    """Every knob has a default; the policy decides what may run at all."""

    # The operator token; None: a new random one (read it back with remote_exec.operator_token).
    token: str | None = None
    # What may run, where, for how long; None: default_policy.toml (a small read-only allowlist).
    policy: Policy | None = None
    # Seconds between keep-alive comments on a quiet run stream.
    heartbeat: float = HEARTBEAT_S
    # -- several instances on one Redis backend only --
    # This instance's name (default: host, pid and a random suffix).
    instance: str | None = None
    # How often it tells the others it is alive (unreachable after three missed beats).
    beat: float = 2.0
    # How long an instance of another host may be silent before its running runs are declared
    # lost (on this host, as soon as its process is gone).
    lost_after: float = 30.0
