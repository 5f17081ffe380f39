"""The policy: parsing (typos are errors), and each check with the spelling tricks it must see through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from remote_exec import Policy, PolicyError, PolicyRefusal
from remote_exec.policy import DEFAULT_POLICY_FILE


@pytest.fixture
def root(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (work / "link").symlink_to(tmp_path / "outside")
    (work / "inner-link").symlink_to(work / "sub")
    return work


def policy_for(root: Path, **sections: dict[str, object]) -> Policy:
    raw: dict[str, dict[str, object]] = {"cwd": {"allow": [str(root)]}, "commands": {"allow": ["echo", "python3"]}}
    raw.update(sections)
    return Policy.from_dict(raw)


def test_default_policy_loads_and_is_small() -> None:
    policy = Policy.default()
    assert policy.commands is not None
    assert "echo" in policy.commands
    # Interpreters run anything; top's "k" signals any process (it killed one in a review).
    for dangerous in ("sh", "bash", "python3", "env", "find", "xargs", "top"):
        assert dangerous not in policy.commands
    assert policy.shell is False
    assert policy.max_output_bytes > 0
    assert DEFAULT_POLICY_FILE.name == "default_policy.toml"


def test_dev_policy_loads() -> None:
    policy = Policy.load(DEFAULT_POLICY_FILE.parent / "dev_policy.toml")
    assert policy.commands is None
    assert policy.shell is True
    assert policy.arg_rule("cat") is None  # permissive: arguments unchecked
    policy.check_args(["cat", "/etc/passwd"], Path.cwd())


def test_default_policy_checks_every_commands_arguments() -> None:
    policy = Policy.default()
    assert policy.commands is not None
    assert all(policy.arg_rule(name) is not None for name in policy.commands)
    assert "*.key" in policy.files_deny


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[runs]\nmax_concurent = 3\n", "unknown key runs.max_concurent"),
        ("[limitz]\n", "unknown section [limitz]"),
        ('[commands]\nallow = "all"\n', 'or "any"'),
        ('[runs]\nmax_concurrent = "3"\n', "wrong type"),
        ("[runs]\nmax_concurrent = 0\n", "at least 1"),
        ("[runs]\ndefault_timeout_s = 10\nmax_timeout_s = 5\n", "default_timeout_s"),
        ('[commands]\nallow = ["bin/sh"]\n', "bare name or an absolute path"),
        ('[commands]\nallow = ["cat"]\nargs = "checked"\n', "must be one of 'builtin', 'unchecked'"),
        ('[commands]\nallow = ["cat"]\nargs = { tac = "unchecked" }\n', "'tac' is not in commands.allow"),
        ('[commands]\nallow = ["cat", "python3"]\nargs = "builtin"\n', "no built-in argument rules for python3"),
        ('[commands]\nallow = "any"\nargs = "builtin"\n', "needs commands.allow to be a list"),
        ("[files]\ndeny = [1]\n", "files.deny must be a list of strings"),
        ("[files]\nallow = []\n", "unknown key files.allow"),
        ("not toml", "not valid TOML"),
    ],
)
def test_bad_policy_files_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Policy.from_toml(text)


def test_commands_allowlist(root: Path) -> None:
    policy = policy_for(root)
    assert policy.resolve_command(["echo", "hi"], {"PATH": os.defpath}).endswith("/echo")
    with pytest.raises(PolicyRefusal, match="'rm' is not allowed by the policy"):
        policy.resolve_command(["rm", "-rf", "/"], {"PATH": os.defpath})
    with pytest.raises(PolicyRefusal):
        policy.resolve_command(["/bin/echo"], {"PATH": os.defpath})  # a path is not the name
    with pytest.raises(ValueError, match="non-empty"):
        policy.resolve_command([], {})
    anything = policy_for(root, commands={"allow": "any"})
    with pytest.raises(ValueError, match="not found on the PATH"):
        anything.resolve_command(["no-such-command-xyz"], {"PATH": os.defpath})


def test_shell_only_when_allowed(root: Path) -> None:
    with pytest.raises(PolicyRefusal, match="shell line"):
        policy_for(root).shell_argv("echo hi")
    assert policy_for(root, commands={"allow": ["echo"], "shell": True}).shell_argv("echo hi") == [
        "/bin/sh",
        "-c",
        "echo hi",
    ]


@pytest.mark.parametrize("cwd", ["/etc", "..", "../outside", "sub/../../outside", "link", "link/.", "/"])
def test_cwd_outside_the_roots_is_refused_however_spelled(root: Path, cwd: str) -> None:
    with pytest.raises(PolicyRefusal, match="outside the allowed directories"):
        policy_for(root).resolve_cwd(cwd)


def test_cwd_inside_resolves_to_the_real_path(root: Path) -> None:
    policy = policy_for(root)
    assert policy.resolve_cwd(None) == root.resolve()
    assert policy.resolve_cwd("sub") == (root / "sub").resolve()
    assert policy.resolve_cwd("inner-link") == (root / "sub").resolve()
    assert policy.resolve_cwd(str(root / "sub" / "..")) == root.resolve()
    with pytest.raises(ValueError, match="does not exist"):
        policy.resolve_cwd("missing")


def test_args_per_command_table(root: Path) -> None:
    text = f"""
[commands]
allow = ["cat", "grep", "python3"]
args = {{ "*" = "builtin", python3 = "unchecked" }}
[cwd]
allow = ["{root}"]
"""
    policy = Policy.from_toml(text)
    assert policy.arg_rule("python3") is None
    assert policy.arg_rule("grep") is not None
    assert policy.arg_summary()["python3"] == "unchecked"
    sub_table = Policy.from_toml(
        f'[commands]\nallow = ["cat"]\n[commands.args]\ncat = "unchecked"\n[cwd]\nallow = ["{root}"]\n'
    )
    sub_table.check_args(["cat", "/etc/passwd"], root)
    absent = policy_for(root, commands={"allow": ["cat", "python3"]})  # built-in where there is a rule
    assert absent.arg_rule("cat") is not None
    assert absent.arg_rule("python3") is None


def test_file_arguments_are_confined_to_the_roots_after_symlinks(root: Path) -> None:
    policy = policy_for(root, commands={"allow": ["cat", "python3"]})
    (root / "sub" / "f.txt").write_text("x")
    (root / "to-outside-file").symlink_to(root.parent / "outside" / "secret.txt")
    cwd = policy.resolve_cwd("sub")
    policy.check_args(["cat", "f.txt", "../sub/f.txt", str(root / "inner-link" / "f.txt")], cwd)
    policy.check_args(["python3", "/etc/passwd"], cwd)  # no built-in rule: unchecked
    for arg in ("/etc/passwd", "../../outside/x", "../link/x", "../to-outside-file", "../link"):
        with pytest.raises(PolicyRefusal, match="outside the allowed directories") as caught:
            policy.check_args(["cat", arg], cwd)
        assert caught.value.rule == "files.outside"


def test_the_data_dir_system_dirs_and_deny_patterns_are_refused_inside_the_roots(root: Path) -> None:
    data = root / "state"
    data.mkdir()
    (root / "state-link").symlink_to(data)
    policy = policy_for(
        root, commands={"allow": ["cat"]}, files={"deny": ["*.key", ".ssh", f"{root}/sub/priv*"]}
    ).protecting(data)
    everything = policy_for(Path("/"), commands={"allow": ["cat"]}).protecting(data)
    cases = [
        (policy, "state/db", "files.data_dir"),
        (policy, "state-link/db", "files.data_dir"),
        (policy, "state/../state/x", "files.data_dir"),
        (policy, "a.key", "files.deny"),
        (policy, ".ssh/id", "files.deny"),
        (policy, "sub/private/x", "files.deny"),
        (everything, "/proc/1/environ", "files.system"),  # even with / allowed
        (everything, "/dev/mem", "files.system"),
        (everything, "/sys/kernel/notes", "files.system"),
        (everything, str(data / "x"), "files.data_dir"),
    ]
    for p, arg, rule in cases:
        with pytest.raises(PolicyRefusal) as caught:
            p.check_args(["cat", arg], root)
        assert caught.value.rule == rule, (arg, caught.value)
    with pytest.raises(PolicyRefusal) as caught:
        policy.resolve_cwd("state")
    assert caught.value.rule == "files.data_dir"
    policy.check_args(["cat", "sub/public.txt", "keys.txt"], root)
    with pytest.raises(PolicyRefusal) as caught:
        policy_for(root, commands={"allow": ["ls"]}).protecting(root).resolve_cwd(None)  # --data-dir .
    assert caught.value.rule == "files.data_dir"


def test_deny_names_match_below_the_allowed_directory_only(tmp_path: Path) -> None:
    work = tmp_path / "my-secret-project"
    work.mkdir()
    policy = policy_for(work, commands={"allow": ["cat"]}, files={"deny": ["*secret*"]})
    policy.check_args(["cat", "README"], policy.resolve_cwd(None))
    with pytest.raises(PolicyRefusal, match=r"\*secret\*"):
        policy.check_args(["cat", "client_secret.json"], work)


def test_environment_pass_and_request(root: Path) -> None:
    policy = policy_for(root, env={"pass": ["PATH", "LC_*"], "request": ["GREETING"]})
    base = {"PATH": "/bin", "LC_ALL": "C", "AWS_SECRET": "x"}
    env = policy.build_env({"GREETING": "hi"}, base)
    assert env == {"PATH": "/bin", "LC_ALL": "C", "GREETING": "hi"}
    with pytest.raises(PolicyRefusal, match="LD_PRELOAD"):
        policy.build_env({"LD_PRELOAD": "/tmp/evil.so"}, base)
    with pytest.raises(ValueError):
        policy.build_env({"A=B": "x"}, base)


def test_timeouts(root: Path) -> None:
    policy = policy_for(root, runs={"default_timeout_s": 5, "max_timeout_s": 10})
    assert policy.timeout(None) == 5
    assert policy.timeout(2.5) == 2.5
    with pytest.raises(PolicyRefusal, match="exceeds the policy's max_timeout_s"):
        policy.timeout(11)
    with pytest.raises(ValueError):
        policy.timeout(0)


def test_rlimits_only_those_set(root: Path) -> None:
    policy = policy_for(root, limits={"cpu_seconds": 5, "memory_bytes": 0, "open_files": 64})
    assert policy.rlimits() == {"cpu": 5, "nofile": 64}
