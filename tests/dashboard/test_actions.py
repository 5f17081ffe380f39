"""Commands are validated before anything runs; process targets are guarded against PID reuse."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import psutil
import pytest

from dashboard import actions
from dashboard.actions import Refused, parse_command, perform, resolve
from tests.dashboard.conftest import start_time
from tests.rig import wait_until


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"action": "reboot"}, '"action" must be one of'),
        ({"action": "set_interval", "seconds": 0.1}, "from 0.25 to 60 seconds, not 0.1"),
        ({"action": "set_interval", "seconds": 61}, "from 0.25 to 60"),
        ({"action": "set_interval", "seconds": "2"}, "must be a number"),
        ({"action": "terminate", "pid": 10}, '"start_time"'),
        ({"action": "terminate", "pid": "10", "start_time": 1.0}, '"pid" must be an integer'),
        ({"action": "kill", "pid": -1, "start_time": 1.0}, "positive"),
        ({"action": "renice", "pid": 10, "start_time": 1.0, "nice": 40}, '"nice" must be from -20'),
        ({"action": "terminate", "pid": 10, "start_time": 1.0, "confirm": "no"}, '"confirm" must be'),
    ],
)
def test_bad_commands_are_refused_with_a_reason(body: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_command(body)


def test_good_commands_parse() -> None:
    cmd = parse_command({"action": "renice", "pid": 42, "start_time": 1700000000.5, "nice": 5, "client_id": "abc"})
    assert (cmd.pid, cmd.start_time, cmd.nice, cmd.client_id, cmd.confirm) == (42, 1700000000.5, 5, "abc", True)
    assert parse_command({"action": "set_interval", "seconds": 2}).seconds == 2.0


@pytest.mark.parametrize("who", ["init", "self", "parent"])
def test_init_self_and_parents_are_never_targets(who: str) -> None:
    pid = {"init": 1, "self": os.getpid(), "parent": os.getppid()}[who]
    with pytest.raises(Refused) as info:
        resolve("kill", pid, psutil.Process(pid).create_time())
    assert info.value.status_code == 403
    assert f"PID {pid}" in info.value.message


def test_a_stale_start_time_is_refused_and_nothing_is_sent(sleeper: subprocess.Popen[bytes]) -> None:
    real = start_time(sleeper.pid)
    with pytest.raises(Refused) as info:
        resolve("kill", sleeper.pid, real - 3.0)
    assert info.value.status_code == 409
    assert "reused" in info.value.message
    assert sleeper.poll() is None
    assert resolve("kill", sleeper.pid, real).pid == sleeper.pid  # the right one is accepted


def test_an_ended_process_is_404(sleeper: subprocess.Popen[bytes]) -> None:
    started = start_time(sleeper.pid)
    sleeper.kill()
    sleeper.wait(5)
    with pytest.raises(Refused) as info:
        resolve("terminate", sleeper.pid, started)
    assert info.value.status_code == 404


def test_suspend_resume_renice_terminate(sleeper: subprocess.Popen[bytes]) -> None:
    proc = resolve("suspend", sleeper.pid, start_time(sleeper.pid))
    assert "SIGSTOP" in perform(proc, "suspend")
    wait_until(lambda: proc.status() == psutil.STATUS_STOPPED, what="the process to stop")
    assert "SIGCONT" in perform(proc, "resume")
    assert perform(proc, "renice", 7) == f"nice changed from {os.nice(0)} to 7"
    assert proc.nice() == 7
    info = actions.describe(proc)
    assert (info["name"], info["cmdline"]) == ("sleep", "sleep 300")
    assert perform(proc, "terminate") == "sent SIGTERM; the process has ended"
    assert sleeper.wait(5) == -15
