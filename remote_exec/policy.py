"""What a run may do: commands and their arguments, the files those name, working directories,
environment, time, output, rlimits.

A policy is read from TOML (``default_policy.toml`` ships next to this module). Unknown keys are
an error: a typo in a security setting must not silently fall back to a default. Checks raise
``PolicyRefusal`` (the app answers 403 naming the rule) for "not allowed" and ``ValueError`` (400)
for "malformed".

File arguments (which ones they are is ``argrules``' business) are checked on their real path,
symlinks and ".." resolved, against the run's cwd: inside a ``cwd.allow`` directory, and never in
the server's data directory, ``/proc``, ``/sys``, ``/dev`` or a ``files.deny`` pattern (issue 14).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .argrules import RULES, ArgRule, rule_for
from .refusal import PolicyRefusal

__all__ = ["DEFAULT_POLICY_FILE", "Policy", "PolicyError", "PolicyRefusal"]

DEFAULT_POLICY_FILE = Path(__file__).parent / "default_policy.toml"
# A hard ceiling whatever a policy says: one run's log is streamed from disk, but not forever.
MAX_OUTPUT_CEILING = 1 << 30
# Never readable through a checked argument, whatever cwd.allow says: /proc/<pid>/environ and
# /proc/self/root reach other processes' secrets and the whole file system; /dev and /sys are
# devices and kernel state, not files.
SYSTEM_DIRS = (Path("/proc"), Path("/sys"), Path("/dev"))
ARG_MODES = ("builtin", "unchecked")


class PolicyError(ValueError):
    """The policy file itself is wrong (unknown key, bad type, bad value)."""


_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "commands": {"allow": (list, str), "args": (str, dict), "shell": bool, "shell_path": str},
    "cwd": {"allow": list, "default": str},
    "files": {"deny": list},
    "env": {"pass": list, "request": (list, str)},
    "runs": {
        "max_concurrent": int,
        "default_timeout_s": (int, float),
        "max_timeout_s": (int, float),
        "max_output_bytes": int,
        "kill_grace_s": (int, float),
    },
    "limits": {"cpu_seconds": int, "memory_bytes": int, "open_files": int},
}


@dataclass(frozen=True, slots=True)
class Policy:
    """Immutable settings; build with :meth:`load`, :meth:`from_toml` or :meth:`default`."""

    commands: tuple[str, ...] | None = ("echo",)  # None: any command
    # How a command's arguments are checked: "builtin" (argrules), "unchecked", or for a command
    # missing from ``args``, ``args_default``; "auto" is builtin where argrules has a rule.
    args: Mapping[str, str] = field(default_factory=dict)
    args_default: str = "auto"
    files_deny: tuple[str, ...] = ()
    # Never readable through a checked argument nor usable as a cwd: the server's data directory
    # (added by ``protecting``, so one policy file serves every data dir).
    protected: tuple[Path, ...] = ()
    shell: bool = False
    shell_path: str = "/bin/sh"
    cwd_roots: tuple[Path, ...] = field(default_factory=lambda: (Path.cwd().resolve(),))
    default_cwd: Path = field(default_factory=lambda: Path.cwd().resolve())
    env_pass: tuple[str, ...] = ("PATH", "HOME", "LANG", "LC_*")
    env_request: tuple[str, ...] | None = ()  # None: any variable
    max_concurrent: int = 4
    default_timeout_s: float = 300.0
    max_timeout_s: float = 3600.0
    max_output_bytes: int = 10 * 1024 * 1024
    kill_grace_s: float = 3.0
    cpu_seconds: int = 0
    memory_bytes: int = 0
    open_files: int = 0

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def default(cls, base: Path | None = None) -> Policy:
        return cls.load(DEFAULT_POLICY_FILE, base=base)

    @classmethod
    def load(cls, path: Path, *, base: Path | None = None) -> Policy:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"cannot read policy file {str(path)!r}: {exc.strerror}") from exc
        try:
            return cls.from_toml(text, base=base)
        except PolicyError as exc:
            raise PolicyError(f"{path}: {exc}") from None

    @classmethod
    def from_toml(cls, text: str, *, base: Path | None = None) -> Policy:
        """Parse a policy. Relative ``cwd`` entries are taken from ``base`` (default: the current
        directory); ``~`` is the server user's home."""
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"not valid TOML: {exc}") from exc
        return cls.from_dict(raw, base=base)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, base: Path | None = None) -> Policy:
        _check_schema(raw)
        base = (base or Path.cwd()).resolve()
        commands = raw.get("commands", {})
        cwd = raw.get("cwd", {})
        env = raw.get("env", {})
        runs = raw.get("runs", {})
        limits = raw.get("limits", {})

        allow = commands.get("allow", ["echo"])
        if isinstance(allow, str):
            if allow != "any":
                raise PolicyError('commands.allow must be a list of command names or "any"')
            command_list: tuple[str, ...] | None = None
        else:
            command_list = tuple(_strings(allow, "commands.allow"))
            for name in command_list:
                if not name or ("/" in name and not name.startswith("/")):
                    raise PolicyError(f"commands.allow: {name!r} must be a bare name or an absolute path")

        roots = tuple(_dir(entry, base, "cwd.allow") for entry in _strings(cwd.get("allow", ["."]), "cwd.allow"))
        if not roots:
            raise PolicyError("cwd.allow must list at least one directory")
        default_cwd = _dir(cwd.get("default", str(roots[0])), base, "cwd.default")
        if not any(default_cwd.is_relative_to(root) for root in roots):
            raise PolicyError(f"cwd.default {str(default_cwd)!r} is not inside any cwd.allow directory")

        request = env.get("request", [])
        env_request = None if request == "any" else tuple(_strings(request, "env.request"))
        if isinstance(request, str) and request != "any":
            raise PolicyError('env.request must be a list of variable patterns or "any"')

        args_default, args = _arg_modes(commands.get("args"), command_list)
        files = raw.get("files", {})
        deny = tuple(_deny_pattern(p, base) for p in _strings(files.get("deny", []), "files.deny"))

        policy = cls(
            commands=command_list,
            args=args,
            args_default=args_default,
            files_deny=deny,
            shell=bool(commands.get("shell", False)),
            shell_path=commands.get("shell_path", "/bin/sh"),
            cwd_roots=roots,
            default_cwd=default_cwd,
            env_pass=tuple(_strings(env.get("pass", ["PATH", "HOME", "LANG", "LC_*"]), "env.pass")),
            env_request=env_request,
            max_concurrent=runs.get("max_concurrent", 4),
            default_timeout_s=float(runs.get("default_timeout_s", 300)),
            max_timeout_s=float(runs.get("max_timeout_s", 3600)),
            max_output_bytes=runs.get("max_output_bytes", 10 * 1024 * 1024),
            kill_grace_s=float(runs.get("kill_grace_s", 3)),
            cpu_seconds=limits.get("cpu_seconds", 0),
            memory_bytes=limits.get("memory_bytes", 0),
            open_files=limits.get("open_files", 0),
        )
        policy.validate()
        return policy

    def validate(self) -> None:
        if self.max_concurrent < 1:
            raise PolicyError("runs.max_concurrent must be at least 1")
        if not 0 < self.default_timeout_s <= self.max_timeout_s:
            raise PolicyError("runs.default_timeout_s must be > 0 and <= runs.max_timeout_s")
        if not 0 < self.max_output_bytes <= MAX_OUTPUT_CEILING:
            raise PolicyError(f"runs.max_output_bytes must be between 1 and {MAX_OUTPUT_CEILING}")
        if not 0 <= self.kill_grace_s <= 60:
            raise PolicyError("runs.kill_grace_s must be between 0 and 60 seconds")
        for name in ("cpu_seconds", "memory_bytes", "open_files"):
            if getattr(self, name) < 0:
                raise PolicyError(f"limits.{name} must be >= 0 (0 means inherit)")

    def protecting(self, *paths: Path) -> Policy:
        """This policy, with ``paths`` (the server's data directory) never readable by a run."""
        extra: list[Path] = []
        for path in paths:
            absolute = Path(os.path.abspath(path))
            extra.extend(p for p in (absolute, Path(os.path.realpath(absolute))) if p not in extra)
        return replace(self, protected=self.protected + tuple(extra))

    # -- checks -----------------------------------------------------------------------------

    def resolve_command(self, argv: list[str], env: Mapping[str, str]) -> str:
        """The absolute path to execute for ``argv``; ``PolicyRefusal`` if argv[0] is not allowed."""
        if not argv or not argv[0]:
            raise ValueError("argv must be a non-empty list whose first item is the command")
        name = argv[0]
        if self.commands is not None and name not in self.commands:
            allowed = ", ".join(self.commands)
            raise PolicyRefusal(
                f"command {name!r} is not allowed by the policy (allowed: {allowed})",
                rule="commands.allow",
                allow=f"add {name!r} to [commands] allow in the policy file (--policy)",
            )
        if "/" in name:
            path = name
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                raise ValueError(f"command {name!r} does not exist or is not executable")
            return os.path.abspath(path)
        found = shutil.which(name, path=env.get("PATH", os.defpath))
        if found is None:
            raise ValueError(f"command {name!r} was not found on the PATH")
        return os.path.abspath(found)

    def shell_argv(self, line: str) -> list[str]:
        if not self.shell:
            raise PolicyRefusal(
                'running a shell line ("command") is not allowed by the policy: send "argv"',
                rule="commands.shell",
                allow="send argv instead, or run the server with a policy that has [commands] shell = true",
            )
        if not line.strip():
            raise ValueError("command must not be empty")
        return [self.shell_path, "-c", line]

    def resolve_cwd(self, cwd: str | None) -> Path:
        """The real directory to run in; relative paths are taken from ``default_cwd``."""
        if cwd is None or cwd == "":
            # A data dir given as the start directory itself (--data-dir .) is refused here too.
            self._check_not_secret("the default cwd", self.default_cwd, self.default_cwd)
            return self.default_cwd
        if "\0" in cwd:
            raise ValueError("cwd must not contain NUL")
        candidate = self.default_cwd / Path(cwd).expanduser()
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            real = None
        if real is not None and not real.is_dir():
            raise ValueError(f"cwd {cwd!r} is not a directory")
        # Checked on the real path, after symlinks and ".." are resolved, so no spelling escapes.
        lexical = Path(os.path.normpath(candidate))
        target = real if real is not None else lexical
        if not any(target.is_relative_to(root) for root in self.cwd_roots):
            roots = ", ".join(str(r) for r in self.cwd_roots)
            raise PolicyRefusal(
                f"cwd {cwd!r} resolves to {str(target)!r}, outside the allowed directories ({roots})",
                rule="cwd.allow",
                allow="add the directory to [cwd] allow in the policy file",
            )
        self._check_not_secret(f"cwd {cwd!r}", target, lexical)
        if real is None:
            raise ValueError(f"cwd {cwd!r} does not exist")
        return real

    def arg_rule(self, name: str) -> ArgRule | None:
        """The rule ``name``'s arguments are checked with, or ``None`` when they are unchecked."""
        mode = self.args.get(name, self.args_default)
        return None if mode == "unchecked" else rule_for(name)

    def check_args(self, argv: list[str], cwd: Path) -> None:
        """``PolicyRefusal`` unless argv's options are allowed and each file it names, taken from
        ``cwd`` (the run's real cwd), lies inside an allowed directory and outside the secret ones."""
        rule = self.arg_rule(argv[0])
        if rule is None:
            return
        for where, arg in rule.file_args(argv[0], argv[1:]):
            self.check_file(f"{where} {arg!r}", arg, cwd)

    def check_file(self, what: str, arg: str, cwd: Path) -> Path:
        """The real path of a file argument, after the same checks as a cwd."""
        if "\0" in arg or not arg:
            raise ValueError(f"{what}: a file argument must be a non-empty path without NUL")
        lexical = Path(os.path.normpath(cwd / arg))
        # Symlinks resolved as far as they exist; a missing file is checked where it would be.
        real = Path(os.path.realpath(lexical))
        self._check_not_secret(what, real, lexical)
        if not any(real.is_relative_to(root) for root in self.cwd_roots):
            roots = ", ".join(str(r) for r in self.cwd_roots)
            raise PolicyRefusal(
                f"{what} resolves to {str(real)!r}, outside the allowed directories ({roots})",
                rule="files.outside",
                allow="add its directory to [cwd] allow in the policy file (file arguments are confined to it)",
            )
        return real

    def _check_not_secret(self, what: str, real: Path, lexical: Path) -> None:
        """Refuse a path (real or as spelled) in the data directory, a system directory or a
        ``files.deny`` pattern; nothing in the policy allows the first two."""
        for path in (real, lexical):
            for top in self.protected:
                if path.is_relative_to(top):
                    raise PolicyRefusal(
                        f"{what} is in the server's data directory ({str(top)!r}), which holds its keys, "
                        "sessions and logs: no run may read it",
                        rule="files.data_dir",
                        allow="never: copy what you need out of the data directory by other means",
                    )
            for top in SYSTEM_DIRS:
                if path.is_relative_to(top):
                    raise PolicyRefusal(
                        f"{what} is under {str(top)!r} (other processes' memory and environment, devices, "
                        "kernel state): no checked argument may name it",
                        rule="files.system",
                        allow='never with the built-in rules (a command with args = "unchecked" in the policy '
                        "gets its arguments as they are)",
                    )
            pattern = _denied(path, self.files_deny, self.cwd_roots)
            if pattern is not None:
                raise PolicyRefusal(
                    f"{what} ({str(path)!r}) matches {pattern!r} in the policy's [files] deny (secrets)",
                    rule="files.deny",
                    allow=f"remove {pattern!r} from [files] deny in the policy file",
                )

    def build_env(self, requested: Mapping[str, str] | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The child's environment: the passed-through server variables, then the requested ones."""
        source = os.environ if base is None else base
        env = {k: v for k, v in source.items() if _matches(k, self.env_pass)}
        for key, value in (requested or {}).items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise ValueError(f"invalid environment variable name or value: {key[:40]!r}")
            if self.env_request is not None and not _matches(key, self.env_request):
                raise PolicyRefusal(
                    f"setting environment variable {key!r} is not allowed by the policy",
                    rule="env.request",
                    allow=f"add {key!r} to [env] request in the policy file",
                )
            env[key] = value
        return env

    def timeout(self, requested: float | None) -> float:
        if requested is None:
            return self.default_timeout_s
        if not requested > 0:
            raise ValueError("timeout_s must be a positive number of seconds")
        if requested > self.max_timeout_s:
            raise PolicyRefusal(
                f"timeout_s {requested:g} exceeds the policy's max_timeout_s ({self.max_timeout_s:g})",
                rule="runs.max_timeout_s",
                allow="ask for less, or raise [runs] max_timeout_s in the policy file",
            )
        return float(requested)

    def rlimits(self) -> dict[str, int]:
        return {
            name: value
            for name, value in (
                ("cpu", self.cpu_seconds),
                ("as", self.memory_bytes),
                ("nofile", self.open_files),
            )
            if value > 0
        }

    def summary(self) -> dict[str, Any]:
        """What the page shows (and what ``GET /exec/policy`` returns)."""
        return {
            "commands": "any" if self.commands is None else list(self.commands),
            "args": self.arg_summary(),
            "files_deny": list(self.files_deny),
            "protected": [str(p) for p in (*self.protected, *SYSTEM_DIRS)],
            "shell": self.shell,
            "cwd_roots": [str(r) for r in self.cwd_roots],
            "default_cwd": str(self.default_cwd),
            "env_pass": list(self.env_pass),
            "env_request": "any" if self.env_request is None else list(self.env_request),
            "max_concurrent": self.max_concurrent,
            "default_timeout_s": self.default_timeout_s,
            "max_timeout_s": self.max_timeout_s,
            "max_output_bytes": self.max_output_bytes,
            "kill_grace_s": self.kill_grace_s,
            "limits": {
                "cpu_seconds": self.cpu_seconds,
                "memory_bytes": self.memory_bytes,
                "open_files": self.open_files,
            },
        }

    def arg_summary(self) -> dict[str, str]:
        """Each listed command's argument rule in a word or two: "unchecked" or the rule's summary."""
        names = self.commands if self.commands is not None else tuple(self.args)
        out: dict[str, str] = {}
        for name in names:
            rule = self.arg_rule(name)
            out[name] = "unchecked" if rule is None else rule.summary
        if self.commands is None:
            out["*"] = "unchecked" if self.args_default == "unchecked" else "built-in rules where there are any"
        return out


def _arg_modes(value: Any, commands: tuple[str, ...] | None) -> tuple[str, dict[str, str]]:
    """``commands.args``: one mode for every command, or a table of modes ("*": the others)."""
    if value is None:
        return "auto", {}
    table = {"*": value} if isinstance(value, str) else dict(value)
    for name, mode in table.items():
        if mode not in ARG_MODES:
            raise PolicyError(f"commands.args: {name!r} must be one of {', '.join(map(repr, ARG_MODES))}")
    default = table.pop("*", "auto")
    for name in table:
        if commands is not None and name not in commands:
            raise PolicyError(f"commands.args: {name!r} is not in commands.allow")
    needs_rule = [n for n, m in table.items() if m == "builtin"]
    if default == "builtin":
        if commands is None:
            raise PolicyError('commands.args = "builtin" needs commands.allow to be a list of names')
        needs_rule += [n for n in commands if n not in table]
    missing = [n for n in needs_rule if rule_for(n) is None]
    if missing:
        raise PolicyError(
            f"commands.args: no built-in argument rules for {', '.join(missing)} (there are rules for "
            f'{", ".join(sorted(RULES))}); set those to "unchecked"'
        )
    return default, table


def _deny_pattern(pattern: str, base: Path) -> str:
    """A name pattern stays as it is; a path pattern is made absolute (from ``base``, ``~`` home)."""
    if not pattern:
        raise PolicyError("files.deny: patterns must not be empty")
    if "/" not in pattern:
        return pattern
    expanded = os.path.expanduser(pattern)
    return expanded if expanded.startswith(("/", "*")) else str(base / expanded)


def _denied(path: Path, patterns: tuple[str, ...], roots: tuple[Path, ...]) -> str | None:
    """The first pattern that matches: a path pattern matches the path or a directory it is in; a
    name pattern any part of the path below the allowed directory it is in (so that a server
    started in ``~/secret-project`` can still read its files)."""
    root = max((r for r in roots if path.is_relative_to(r)), key=lambda r: len(r.parts), default=None)
    parts = path.relative_to(root).parts if root is not None else path.parts
    for pattern in patterns:
        if "/" in pattern:
            if any(fnmatch.fnmatchcase(str(p), pattern) for p in (path, *path.parents)):
                return pattern
        elif any(fnmatch.fnmatchcase(part, pattern) for part in parts):
            return pattern
    return None


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where} must be a list of strings")
    return list(value)


def _dir(entry: str, base: Path, where: str) -> Path:
    path = (base / Path(entry).expanduser()).resolve()
    if not path.is_dir():
        raise PolicyError(f"{where}: {entry!r} ({str(path)!r}) is not an existing directory")
    return path


def _check_schema(raw: Mapping[str, Any]) -> None:
    for section, body in raw.items():
        keys = _SCHEMA.get(section)
        if keys is None:
            raise PolicyError(f"unknown section [{section}] (known: {', '.join(_SCHEMA)})")
        if not isinstance(body, dict):
            raise PolicyError(f"[{section}] must be a table")
        for key, value in body.items():
            expected = keys.get(key)
            if expected is None:
                raise PolicyError(f"unknown key {section}.{key} (known: {', '.join(keys)})")
            if isinstance(value, bool) and expected is not bool:
                raise PolicyError(f"{section}.{key} has the wrong type (bool)")
            if not isinstance(value, expected):
                raise PolicyError(f"{section}.{key} has the wrong type ({type(value).__name__})")
