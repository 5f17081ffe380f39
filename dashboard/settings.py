"""The dashboard's options, in one place so tests and deployments can change them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .alerts import Rule
from .sessions import IDLE, MAX_AGE

__all__ = ["DashboardSettings"]


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """Every knob has a default a single machine can live with."""

    # The token that allows control actions; None: one is generated (printed at start). Every
    # instance showing the same hosts needs the same one.
    control_token: str | None = None
    # Seconds between two samples (0.25-60), and how much history a new page gets.
    interval: float = 1.0
    history_seconds: float = 300.0
    # Processes listed per frame (the busiest first).
    process_limit: int = 300
    # Alert rules; None: the defaults (dashboard.alerts), () or []: none.
    rules: Sequence[Rule] | None = None
    # How long the acting page has to confirm a dangerous action.
    confirm_timeout: float = 30.0
    # A page's confirmation session outlives a dropped stream this long; at most this many at once (429).
    session_grace: float = 30.0
    max_sessions: int = 10_000
    # Wrong log-ins from one client address within a minute; the rest of the minute is 429.
    max_login_failures: int = 10
    # The host this instance samples (default: the machine's name), or shares with other
    # instances of the same name on one Redis, one of which samples it.
    host_name: str | None = None
    # Instances announce themselves every `beat` seconds; one silent for three beats is gone.
    beat: float = 2.0
    # A log-in lasts at most `login_max_age` seconds, and ends after `login_idle` seconds unused.
    login_max_age: float = MAX_AGE
    login_idle: float = IDLE
