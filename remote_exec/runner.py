"""Starting runs, recording their output, and ending them (with everything they started).

Each run is its own session and process group (``start_new_session``), so a timeout or a
terminate reaches the whole tree with ``killpg``: TERM (and CONT, so a stopped job can act on it),
then KILL after the policy's grace period. Children that moved to a group of their own are found
through the process tree (psutil) while their parent lives, and signalled too.

Output is read in chunks as it arrives (never in lines, so a prompt without a newline shows up at
once) and appended to the run's log; streams read the log (see ``streams.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import sqlite3
import struct
import sys
import termios
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from shared.datadir import private_dir

from .mirror import RunMirror
from .policy import Policy
from .runlog import RunLog
from .store import RUNNING, RunRow, Store

__all__ = [
    "SIGNALS",
    "InputClosed",
    "InputStalled",
    "LiveRun",
    "NotRunning",
    "Pulse",
    "RunRequest",
    "Runner",
    "TooManyRuns",
]

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).parent / "_launch.py"
SIGNALS = {
    "INT": signal.SIGINT,
    "TERM": signal.SIGTERM,
    "KILL": signal.SIGKILL,
    "HUP": signal.SIGHUP,
    "STOP": signal.SIGSTOP,
    "CONT": signal.SIGCONT,
}
READ_CHUNK = 1 << 16
# After the main process exits, how long its output may stay open (children still writing)
# before the rest of its process group is ended.
LINGER_S = 1.0
INPUT_TIMEOUT_S = 10.0
_INPUT_IDS_KEPT = 1024


class TooManyRuns(RuntimeError):
    """The policy's max_concurrent runs are already running."""


class NotRunning(RuntimeError):
    """The run has finished (or is not a run of this server); it takes no input or signals."""


class InputClosed(RuntimeError):
    """EOF was already sent, or the program closed its input."""


class Pulse:
    """Wakes every waiter when something happens, without losing a wake-up: a waiter passes the
    ``version`` it saw before looking, and returns at once if it has moved on since."""

    def __init__(self) -> None:
        self.version = 0
        self._fut: asyncio.Future[None] | None = None
        # Called at each fire, synchronously: the hub's follower of the run's log (logtopics.py).
        self.listeners: list[Callable[[], None]] = []

    def fire(self) -> None:
        self.version += 1
        for listener in self.listeners:
            listener()
        if self._fut is not None:
            if not self._fut.done():
                self._fut.set_result(None)
            self._fut = None

    async def wait(self, seen: int, timeout: float) -> bool:
        """``True`` if woken (or already moved on), ``False`` on timeout."""
        if self.version != seen:
            return True
        if self._fut is None:
            self._fut = asyncio.get_running_loop().create_future()
        try:
            # Shielded: one waiter giving up (client gone) must not cancel the others' wait.
            await asyncio.wait_for(asyncio.shield(self._fut), timeout)
        except TimeoutError:
            return False
        return True


@dataclass(slots=True)
class RunRequest:
    """A start request that passed the policy."""

    argv: list[str]
    exe: str
    command: str
    shell: bool
    cwd: Path
    env: dict[str, str]
    env_keys: list[str]
    pty: bool
    cols: int
    rows: int
    timeout_s: float
    owner: str
    addr: str
    role: str = "operator"


@dataclass(eq=False)
class LiveRun:
    row: RunRow
    log: RunLog
    started: float = field(default_factory=time.monotonic)
    pulse: Pulse = field(default_factory=Pulse)
    proc: asyncio.subprocess.Process | None = None
    master: int = -1
    viewers: int = 0
    recorded: int = 0
    dropped: int = 0
    truncated: bool = False
    end_reason: str | None = None  # "timeout" | "terminate" | "shutdown"
    input_closed: bool = False
    finished: bool = False
    input_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    input_ids: OrderedDict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=OrderedDict)
    output_done: asyncio.Future[Any] | None = None
    task: asyncio.Task[None] | None = None
    killer: asyncio.Task[None] | None = None
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    mirror: RunMirror | None = None

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def pgid(self) -> int:
        return self.proc.pid if self.proc is not None else -1


OnChange = Callable[[RunRow], Awaitable[None]]
MirrorFactory = Callable[[str], RunMirror]


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Runner:
    """Runs of this instance. ``id_prefix`` starts every run id (the instance's name, when several
    share a backend); ``mirror`` makes the publisher of a run's log (see ``mirror.py``);
    ``is_orphan`` says whether a run left "running" in the store is ours to declare lost."""

    def __init__(
        self,
        data_dir: Path,
        store: Store,
        policy: Policy,
        on_change: OnChange | None = None,
        *,
        id_prefix: str = "",
        mirror: MirrorFactory | None = None,
        is_orphan: Callable[[RunRow], bool] | None = None,
    ) -> None:
        self.runs_dir = data_dir / "exec-runs"
        self.store = store
        self.policy = policy
        self.on_change = on_change
        self.id_prefix = id_prefix
        self.mirror = mirror
        self.is_orphan = is_orphan
        self.live: dict[str, LiveRun] = {}
        self.closing = False

    def log_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.log"

    # -- startup: runs the last server left behind -------------------------------------------

    def recover(self) -> list[str]:
        """Mark runs left "running" by a server that died as ``lost`` (ending any process of theirs
        still alive) and close their logs with an exit frame. Returns their ids."""
        private_dir(self.runs_dir)
        lost = []
        for row in self.store.running_runs():
            if self.is_orphan is not None and not self.is_orphan(row):
                continue  # a run of another instance that shares this data dir, still alive
            killed = _kill_orphans(row)
            with RunLog.recover(self.log_path(row.id)) as runlog:
                runlog.append_json(
                    b"x",
                    {"status": "lost", "code": None, "signal": None, "duration_s": None, "dropped_bytes": 0,
                     "reason": "the server stopped while this run was running"},
                )  # fmt: skip
                size = runlog.size
            self.store.finish_run(
                row.id,
                status="lost",
                exit_code=None,
                signal=None,
                ended_at=time.time(),
                duration_s=None,
                output_bytes=size,
                dropped_bytes=0,
            )
            self.store.audit("system", "system", "", "lost", row.id, leftover_processes_killed=killed)
            lost.append(row.id)
        return lost

    # -- starting ----------------------------------------------------------------------------

    async def start(self, req: RunRequest) -> RunRow:
        if self.closing:
            raise NotRunning("the server is shutting down")
        running = len(self.live)
        if running >= self.policy.max_concurrent:
            raise TooManyRuns(f"{running} runs are running: the policy allows {self.policy.max_concurrent} at a time")
        private_dir(self.runs_dir)
        run_id = self.id_prefix + secrets.token_hex(6)
        row = RunRow(
            id=run_id,
            argv=req.argv,
            command=req.command,
            shell=req.shell,
            cwd=str(req.cwd),
            env_keys=req.env_keys,
            pty=req.pty,
            cols=req.cols,
            rows=req.rows,
            owner=req.owner,
            addr=req.addr,
            status=RUNNING,
            exit_code=None,
            signal=None,
            started_at=time.time(),
            ended_at=None,
            duration_s=None,
            timeout_s=req.timeout_s,
            output_bytes=0,
            dropped_bytes=0,
            pid=None,
            pid_started=None,
        )
        mirror = self.mirror(run_id) if self.mirror is not None else None
        if mirror is not None:
            await mirror.open(row.public())  # BackendUnavailable: nothing started, nothing stored
        run = LiveRun(
            row, RunLog(self.log_path(run_id), writable=True, on_append=mirror.put if mirror else None), mirror=mirror
        )
        try:
            self.store.insert_run(row)
        except BaseException:
            # Not started, so not kept (a full disk fails the insert): its log file and fd go too.
            run.log.close()
            with contextlib.suppress(OSError):
                os.unlink(self.log_path(run_id))
            raise
        self.live[run_id] = run
        try:
            await self._spawn(run, req)
        except OSError as exc:
            self.store.audit(req.owner, req.role, req.addr, "start-failed", run_id, argv=req.argv, error=str(exc))
            self._record(run, b"e", f"remote_exec: cannot start {req.argv[0]!r}: {exc.strerror or exc}\n".encode())
            await self._finish(run, None, 0.0, failed=True)
            return row
        self.store.audit(
            req.owner, req.role, req.addr, "start", run_id,
            argv=req.argv, cwd=str(req.cwd), pty=req.pty, env_keys=req.env_keys, timeout_s=req.timeout_s,
            pid=run.proc.pid if run.proc else None,
        )  # fmt: skip
        run.task = asyncio.create_task(self._supervise(run), name=f"exec-run:{run_id}")
        if self.on_change is not None:
            await self.on_change(row)
        return row

    async def _spawn(self, run: LiveRun, req: RunRequest) -> None:
        spec = {"exe": req.exe, "cwd": str(req.cwd), "tty": req.pty, "rlimits": self.policy.rlimits()}
        cmd = [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(spec), *req.argv]
        env = dict(req.env)
        loop = asyncio.get_running_loop()
        if req.pty:
            env.setdefault("TERM", "xterm-256color")
            master, slave = os.openpty()
            try:
                _set_winsize(slave, req.rows, req.cols)
                run.proc = await asyncio.create_subprocess_exec(
                    *cmd, stdin=slave, stdout=slave, stderr=slave, cwd=req.cwd, env=env, start_new_session=True
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)  # ours must go, or reading the master never ends
            os.set_blocking(master, False)
            run.master = master
            # The size comes first in the log, so a replay draws the screen at the size it had.
            run.log.append_json(b"r", {"cols": req.cols, "rows": req.rows})
            run.output_done = loop.create_future()
            loop.add_reader(master, self._on_pty_readable, run)
        else:
            pipe = asyncio.subprocess.PIPE
            run.proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=pipe, stdout=pipe, stderr=pipe, cwd=req.cwd, env=env, start_new_session=True
            )
            assert run.proc.stdout is not None
            assert run.proc.stderr is not None
            run.readers = [
                asyncio.create_task(self._pump(run, run.proc.stdout, b"o")),
                asyncio.create_task(self._pump(run, run.proc.stderr, b"e")),
            ]
            run.output_done = asyncio.ensure_future(asyncio.gather(*run.readers, return_exceptions=True))
        pid_started: float | None = None
        with contextlib.suppress(psutil.Error):
            pid_started = psutil.Process(run.proc.pid).create_time()
        run.row.pid, run.row.pid_started = run.proc.pid, pid_started
        self.store.set_pid(run.id, run.proc.pid, pid_started)

    # -- output -------------------------------------------------------------------------------

    def _on_pty_readable(self, run: LiveRun) -> None:
        try:
            data = os.read(run.master, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: every copy of the terminal's other side is closed
        if data:
            self._record(run, b"o", data)
            return
        asyncio.get_running_loop().remove_reader(run.master)
        if run.output_done is not None and not run.output_done.done():
            run.output_done.set_result(None)

    async def _pump(self, run: LiveRun, reader: asyncio.StreamReader, kind: bytes) -> None:
        while True:
            chunk = await reader.read(READ_CHUNK)  # whatever is there, as soon as there is some
            if not chunk:
                return
            self._record(run, kind, chunk)

    def _record(self, run: LiveRun, kind: bytes, data: bytes) -> None:
        """Append output (or pipe input) to the log, within the policy's byte budget."""
        if run.truncated:
            run.dropped += len(data)
            return
        room = self.policy.max_output_bytes - run.recorded
        keep = data if len(data) <= room else data[:room]
        try:
            if keep:
                run.log.append(kind, keep)
                run.recorded += len(keep)
            if len(keep) < len(data):
                run.truncated = True
                run.dropped += len(data) - len(keep)
                limit = self.policy.max_output_bytes
                run.log.append_json(
                    b"t",
                    {"limit": limit,
                     "message": f"output truncated: this run reached the policy's limit of {limit} bytes; "
                                "the rest of its output is read and discarded"},
                )  # fmt: skip
        except OSError:
            log.exception("cannot write the log of run %s; its further output is dropped", run.id)
            run.truncated = True
        run.pulse.fire()

    def notice(self, run: LiveRun, text: str, **extra: Any) -> None:
        with contextlib.suppress(OSError):
            run.log.append_json(b"n", {"text": text, **extra})
        run.pulse.fire()

    # -- the run's life -----------------------------------------------------------------------

    async def _supervise(self, run: LiveRun) -> None:
        proc = run.proc
        assert proc is not None
        rc: int | None = None
        duration = 0.0
        try:
            try:
                rc = await asyncio.wait_for(proc.wait(), run.row.timeout_s)
                duration = time.monotonic() - run.started
            except TimeoutError:
                if run.end_reason is None:
                    run.end_reason = "timeout"
                    self.notice(run, f"timed out after {run.row.timeout_s:g} s: ending the process tree")
                killer = asyncio.create_task(self._kill_tree(run))
                rc = await proc.wait()
                duration = time.monotonic() - run.started
                await killer
            # The main process is gone. Whatever it left in its group (a `cmd &`) is ended too:
            # at once if it closed its output, after LINGER_S if it still writes.
            if not await self._output_closed(run, LINGER_S):
                self.notice(run, "the main process exited; ending what it left running in its process group")
            await self._kill_tree(run, grace=min(self.policy.kill_grace_s, 1.0))
            await self._output_closed(run, 5.0)
        except asyncio.CancelledError:
            await self._kill_tree(run, grace=0)
            raise
        finally:
            await self._finish(run, rc, duration)

    async def _output_closed(self, run: LiveRun, timeout: float) -> bool:
        if run.output_done is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(run.output_done), timeout)
        except TimeoutError:
            return False
        return True

    async def _finish(self, run: LiveRun, rc: int | None, duration: float, *, failed: bool = False) -> None:
        if run.finished:
            return
        run.finished = True
        sig: str | None = None
        code: int | None = rc
        if rc is not None and rc < 0:
            code = None
            with contextlib.suppress(ValueError):
                sig = signal.Signals(-rc).name.removeprefix("SIG")
            sig = sig or str(-rc)
        if failed:
            status = "failed"
        elif run.end_reason == "timeout":
            status = "timeout"
        elif run.end_reason in ("terminate", "shutdown"):
            status = "terminated"
        elif sig is not None:
            status = "signalled"
        else:
            status = "exited"
        self._close_io(run)
        exit_info = {
            "status": status,
            "code": code,
            "signal": sig,
            "duration_s": round(duration, 3),
            "output_bytes": run.recorded,
            "dropped_bytes": run.dropped,
        }
        try:
            run.log.append_json(b"x", exit_info)
        except OSError:
            log.exception("cannot write the exit of run %s", run.id)
        run.log.close()
        if run.mirror is not None:
            await run.mirror.finish()  # the exit is on the run's topic before the run list says so
        now = time.time()
        row = run.row
        row.status, row.exit_code, row.signal = status, code, sig
        row.ended_at, row.duration_s = now, round(duration, 3)
        row.output_bytes, row.dropped_bytes = run.recorded, run.dropped
        try:
            self.store.finish_run(
                run.id,
                status=status,
                exit_code=code,
                signal=sig,
                ended_at=now,
                duration_s=row.duration_s,
                output_bytes=run.recorded,
                dropped_bytes=run.dropped,
            )
            self.store.audit(row.owner, "operator", row.addr, "end", run.id, **exit_info)
        except sqlite3.Error as exc:
            # A full disk: the run still ends here (its log has the exit); its stored row is
            # put right by the recovery at the next start, which reads the log.
            log.error("cannot record the end of run %s: %s", run.id, exc)
        self.live.pop(run.id, None)
        run.pulse.fire()
        if self.on_change is not None:
            try:
                await self.on_change(row)
            except Exception:
                log.exception("run-list update failed for %s", run.id)

    def _close_io(self, run: LiveRun) -> None:
        for task in run.readers:
            task.cancel()
        if run.master >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(run.master)
            os.close(run.master)
            run.master = -1
        if run.proc is not None and run.proc.stdin is not None:
            with contextlib.suppress(Exception):
                run.proc.stdin.close()

    # -- ending a process tree ------------------------------------------------------------------

    def _strays(self, run: LiveRun) -> list[psutil.Process]:
        """Descendants that left the run's process group (``setsid``, ``setpgid``)."""
        if run.proc is None or run.proc.returncode is not None:
            return []
        try:
            children = psutil.Process(run.proc.pid).children(recursive=True)
        except psutil.Error:
            return []
        out = []
        for child in children:
            with contextlib.suppress(OSError):
                if os.getpgid(child.pid) != run.pgid:
                    out.append(child)
        return out

    def _alive(self, run: LiveRun, strays: list[psutil.Process]) -> bool:
        """Whether anything of the tree still runs. Zombies do not count: a killed child that was
        re-parented to init stays in the group until init reaps it, which can take seconds."""
        try:
            os.killpg(run.pgid, 0)
            in_group = _live_members(run.pgid)
        except ProcessLookupError:
            in_group = False
        except PermissionError:
            in_group = True
        if in_group:
            return True
        for p in strays:
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    return True
        return False

    def _signal_tree(self, run: LiveRun, strays: list[psutil.Process], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pgid, sig)
        for p in strays:
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)

    async def _kill_tree(self, run: LiveRun, grace: float | None = None) -> None:
        """TERM the whole tree, KILL what is left after ``grace`` seconds. Returns quickly if
        nothing is left."""
        if run.pgid <= 0:
            return
        grace = self.policy.kill_grace_s if grace is None else grace
        strays = self._strays(run)
        if not self._alive(run, strays):
            return
        self._signal_tree(run, strays, signal.SIGTERM)
        self._signal_tree(run, strays, signal.SIGCONT)  # a stopped process acts on TERM only once resumed
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if not self._alive(run, strays):
                return
        self._signal_tree(run, strays, signal.SIGKILL)

    # -- operator actions -------------------------------------------------------------------------

    def get_live(self, run_id: str) -> LiveRun:
        run = self.live.get(run_id)
        if run is None or run.finished or run.proc is None:
            raise NotRunning(f"run {run_id} is not running")
        return run

    async def send_input(self, run_id: str, data: bytes, eof: bool, input_id: str | None) -> dict[str, Any]:
        run = self.get_live(run_id)
        if input_id is not None:
            previous = run.input_ids.get(input_id)
            if previous is not None:
                result = dict(await asyncio.shield(previous))
                result["duplicate"] = True
                return result
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            run.input_ids[input_id] = fut
            while len(run.input_ids) > _INPUT_IDS_KEPT:
                run.input_ids.popitem(last=False)
        try:
            async with run.input_lock:
                result = await self._deliver(run, data, eof)
        except BaseException as exc:
            if input_id is not None:
                run.input_ids.pop(input_id, None)  # not delivered: a retry with the same id may try again
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: duplicates waiting on it get it too
            raise
        if input_id is not None:
            fut.set_result(result)
        return result

    async def _deliver(self, run: LiveRun, data: bytes, eof: bool) -> dict[str, Any]:
        if run.finished:
            raise NotRunning(f"run {run.id} has finished")
        if run.input_closed:
            raise InputClosed(f"run {run.id} has no more input: EOF was sent or the program closed it")
        proc = run.proc
        assert proc is not None
        if run.row.pty:
            # The terminal echoes what it is sent, so input is not logged separately (and a
            # password typed at a no-echo prompt stays out of the log).
            payload = data + (b"\x04" if eof else b"")  # Ctrl-D: end of input at a line start
            await _write_fd(run.master, payload, INPUT_TIMEOUT_S)
            return {"bytes": len(data), "eof": eof}
        stdin = proc.stdin
        assert stdin is not None
        if data:
            # Logged before writing, so it shows up before whatever the program answers to it.
            self._record(run, b"i", data)
            try:
                stdin.write(data)
                await asyncio.wait_for(stdin.drain(), INPUT_TIMEOUT_S)
            except TimeoutError:
                raise InputStalled(f"the program is not reading its input (waited {INPUT_TIMEOUT_S:g} s)") from None
            except (BrokenPipeError, ConnectionResetError) as exc:
                run.input_closed = True
                self.notice(run, "input not delivered: the program closed its input")
                raise InputClosed(f"run {run.id} closed its input") from exc
        if eof:
            run.input_closed = True
            stdin.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stdin.wait_closed(), INPUT_TIMEOUT_S)
            try:
                run.log.append(b"z", b"")
            except OSError:
                pass
            run.pulse.fire()
        return {"bytes": len(data), "eof": eof}

    def send_signal(self, run_id: str, name: str, actor: str) -> int:
        run = self.get_live(run_id)
        sig = SIGNALS[name]
        target = run.pgid
        if run.row.pty and sig == signal.SIGINT and run.master >= 0:
            # What Ctrl-C does: the terminal's foreground job (a shell's child, not the shell).
            with contextlib.suppress(OSError):
                target = os.tcgetpgrp(run.master)
        try:
            os.killpg(target, sig)
        except ProcessLookupError as exc:
            raise NotRunning(f"run {run_id} has no process left to signal") from exc
        self.notice(run, f"{actor} sent SIG{name}", signal=name, by=actor)
        return target

    def terminate(self, run_id: str, actor: str, reason: str = "terminate") -> None:
        run = self.get_live(run_id)
        if run.end_reason is None:
            run.end_reason = reason
        if run.killer is None or run.killer.done():
            self.notice(run, f"{actor} asked to terminate: TERM to the process tree, KILL after "
                             f"{self.policy.kill_grace_s:g} s", by=actor)  # fmt: skip
            run.killer = asyncio.create_task(self._kill_tree(run), name=f"exec-kill:{run_id}")

    def resize(self, run_id: str, cols: int, rows: int) -> None:
        run = self.get_live(run_id)
        if not run.row.pty:
            raise ValueError(f"run {run_id} has no terminal (it was started with pty: false)")
        if run.master >= 0:
            _set_winsize(run.master, rows, cols)  # the kernel sends SIGWINCH to the foreground job
        run.row.cols, run.row.rows = cols, rows
        self.store.set_size(run_id, cols, rows)
        with contextlib.suppress(OSError):
            run.log.append_json(b"r", {"cols": cols, "rows": rows})
        run.pulse.fire()

    # -- shutdown ----------------------------------------------------------------------------------

    def wake_all(self) -> None:
        for run in list(self.live.values()):
            run.pulse.fire()

    async def shutdown(self) -> None:
        """End every run (its tree included) and record how it ended."""
        self.closing = True
        runs = list(self.live.values())
        for run in runs:
            if run.end_reason is None:
                run.end_reason = "shutdown"
                self.notice(run, "the server is shutting down: ending this run")
        await asyncio.gather(
            *(self._kill_tree(run, grace=min(self.policy.kill_grace_s, 2.0)) for run in runs), return_exceptions=True
        )
        tasks = [run.task for run in runs if run.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=8)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _live_members(pgid: int) -> bool:
    """Whether process group ``pgid`` has a member that is not a zombie."""
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.pid) == pgid:
                return True
        except (OSError, psutil.Error):
            continue
    return False


def _kill_orphans(row: RunRow) -> int:
    """SIGKILL processes of a lost run still in its process group. A process counts only if it
    is in the group the run had *and* was started after the run, so a reused pid is left alone."""
    if not row.pid:
        return 0
    killed = 0
    for p in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getpgid(p.pid) != row.pid or p.info["create_time"] < row.started_at - 2:
                continue
            p.kill()
            killed += 1
        except (OSError, psutil.Error):
            continue
    return killed


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _write_fd(fd: int, data: bytes, timeout: float) -> None:
    """Write all of ``data`` to a non-blocking fd, waiting for room (a pty buffer is small)."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    deadline = loop.time() + timeout
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
            continue
        except BlockingIOError:
            pass
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_writer(fd, _resolve, ready)
        try:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            await asyncio.wait_for(ready, remaining)
        except TimeoutError:
            raise InputStalled(f"the program is not reading its input ({len(view)} bytes not delivered)") from None
        finally:
            loop.remove_writer(fd)


class InputStalled(RuntimeError):
    """The program did not read its input in time."""
