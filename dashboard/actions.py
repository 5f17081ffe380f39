"""Control actions: parsing a POSTed command, and acting on a process safely (blocking psutil calls).

A process is named by ``(pid, start_time)``: the start time is checked before anything is sent,
and psutil itself re-checks it before each signal, so a PID that was reused in the meantime is
never hit. PID 1, the dashboard's own process and its parents are refused outright.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psutil

from .alerts import Rule, parse_rules
from .sampler import check_interval

__all__ = [
    "CONFIRMED_ACTIONS",
    "PROCESS_ACTIONS",
    "SETTINGS_ACTIONS",
    "Command",
    "Refused",
    "describe",
    "parse_command",
    "perform",
    "resolve",
]

SETTINGS_ACTIONS = ("set_interval", "pause_sampling", "resume_sampling", "set_rules")
PROCESS_ACTIONS = ("terminate", "kill", "suspend", "resume", "renice")
# Resuming a stopped process undoes a suspend and loses nothing, so it is not asked about.
CONFIRMED_ACTIONS = frozenset({"terminate", "kill", "suspend", "renice"})
# Every field a command may carry; any other is refused rather than silently ignored.
COMMAND_FIELDS = ("action", "seconds", "rules", "pid", "start_time", "nice", "client_id", "confirm")
START_TOLERANCE = 0.011  # start times travel rounded to 1/100 s, the kernel's clock tick
END_WAIT = 2.0


class Refused(Exception):
    """Nothing was done to the process; ``status_code`` is the HTTP answer (403/404/409)."""

    def __init__(self, status_code: int, outcome: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.outcome = outcome
        self.message = message


@dataclass(slots=True)
class Command:
    action: str
    seconds: float | None = None
    rules: list[Rule] | None = None
    pid: int | None = None
    start_time: float | None = None
    nice: int | None = None
    client_id: str | None = None
    confirm: bool = True
    params: dict[str, Any] = field(default_factory=dict)  # as given, for the audit log


def _int(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f'"{name}" must be an integer')
    return value


def parse_command(obj: Any) -> Command:
    """Validate a command body; ``ValueError`` names the first problem (the app answers 422)."""
    if not isinstance(obj, dict):
        raise ValueError('the body must be a JSON object with an "action"')
    unknown = sorted(set(obj) - set(COMMAND_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}: a command has {', '.join(COMMAND_FIELDS)}")
    action = obj.get("action")
    if action not in SETTINGS_ACTIONS + PROCESS_ACTIONS:
        raise ValueError(f'"action" must be one of {", ".join(SETTINGS_ACTIONS + PROCESS_ACTIONS)}')
    cmd = Command(action)
    if action == "set_interval":
        cmd.seconds = check_interval(obj.get("seconds"))
        cmd.params = {"seconds": cmd.seconds}
    elif action == "set_rules":
        cmd.rules = parse_rules(obj.get("rules"))
        cmd.params = {"rules": [r.label for r in cmd.rules]}
    elif action in PROCESS_ACTIONS:
        cmd.pid = _int(obj, "pid")
        if cmd.pid <= 0:
            raise ValueError('"pid" must be a positive integer')
        start = obj.get("start_time")
        if not isinstance(start, int | float) or isinstance(start, bool) or start <= 0:
            raise ValueError(
                '"start_time" (the process start time, seconds since the epoch, as listed in the frames) '
                "is required: it is what makes sure a reused PID is never hit"
            )
        cmd.start_time = float(start)
        cmd.params = {"pid": cmd.pid, "start_time": cmd.start_time}
        if action == "renice":
            cmd.nice = _int(obj, "nice")
            if not -20 <= cmd.nice <= 19:
                raise ValueError('"nice" must be from -20 (highest priority) to 19 (lowest)')
            cmd.params["nice"] = cmd.nice
    client_id = obj.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or not 1 <= len(client_id) <= 64):
        raise ValueError('"client_id" must be the id of the page\'s session (a string)')
    cmd.client_id = client_id
    confirm = obj.get("confirm", True)
    if not isinstance(confirm, bool):
        raise ValueError('"confirm" must be true or false')
    cmd.confirm = confirm
    return cmd


def protected() -> dict[int, str]:
    """PIDs never to touch, with the reason: init, ourselves, and every process above us."""
    reasons = {1: "PID 1 (init): signalling it would bring the machine or container down"}
    me = psutil.Process()
    reasons[os.getpid()] = "the dashboard's own process"
    for parent in me.parents():
        reasons.setdefault(parent.pid, f"a parent of the dashboard ({parent.name()})")
    return reasons


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def resolve(action: str, pid: int, start_time: float) -> psutil.Process:
    """The process ``(pid, start_time)`` names, or :class:`Refused` saying why not."""
    why = protected().get(pid)
    if why is not None:
        raise Refused(403, "refused", f"refusing to {action} PID {pid}: it is {why}")
    try:
        proc = psutil.Process(pid)
        created = proc.create_time()
    except psutil.NoSuchProcess:
        raise Refused(404, "refused", f"no process with PID {pid}: it has ended") from None
    if abs(created - start_time) > START_TOLERANCE:
        raise Refused(
            409,
            "refused",
            f"PID {pid} now belongs to another process (started {_clock(created)}, not {_clock(start_time)}): "
            "the one you picked has ended and its PID was reused; nothing was done",
        )
    return proc


def describe(proc: psutil.Process) -> dict[str, Any]:
    """What the confirmation question and the audit log show about a target."""
    with proc.oneshot():
        info: dict[str, Any] = {"pid": proc.pid, "start_time": round(proc.create_time(), 2)}
        for name, getter in (("name", proc.name), ("user", proc.username), ("status", proc.status)):
            try:
                info[name] = getter()
            except (psutil.AccessDenied, KeyError):
                info[name] = "?"
        try:
            info["cmdline"] = " ".join(proc.cmdline())[:300]
        except psutil.AccessDenied:
            info["cmdline"] = ""
    return info


def target_text(info: dict[str, Any]) -> str:
    return f"PID {info['pid']} {info.get('name', '?')} ({info.get('user', '?')}, started {_clock(info['start_time'])})"


def _ended(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def perform(proc: psutil.Process, action: str, nice: int | None = None) -> str:
    """Do it; a sentence saying what happened. :class:`Refused` if the OS says no or it is gone."""
    try:
        if action in ("terminate", "kill"):
            signal = "SIGTERM" if action == "terminate" else "SIGKILL"
            proc.terminate() if action == "terminate" else proc.kill()
            deadline = time.monotonic() + END_WAIT
            while time.monotonic() < deadline:
                if _ended(proc):
                    return f"sent {signal}; the process has ended"
                time.sleep(0.05)
            return f"sent {signal}; the process is still running after {END_WAIT:g} s (it may be handling it)"
        if action == "suspend":
            proc.suspend()
            return "sent SIGSTOP; the process is stopped until resumed"
        if action == "resume":
            proc.resume()
            return "sent SIGCONT; the process runs again"
        if action == "renice":
            assert nice is not None  # parse_command guarantees it
            before = proc.nice()
            proc.nice(nice)
            return f"nice changed from {before} to {nice}"
    except psutil.NoSuchProcess:
        raise Refused(404, "failed", f"PID {proc.pid} ended before it could be sent anything") from None
    except psutil.AccessDenied:
        raise Refused(
            403, "failed", f"the operating system refused to {action} PID {proc.pid}: not permitted for this user"
        ) from None
    raise ValueError(f"not a process action: {action!r}")
