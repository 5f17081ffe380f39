"""The built-in argument rules, read the way GNU getopt reads argv (pure; no process started)."""

from __future__ import annotations

import pytest

from remote_exec import PolicyRefusal
from remote_exec.argrules import RULES, rule_for


def files(argv: list[str]) -> list[str]:
    rule = rule_for(argv[0])
    assert rule is not None
    return [path for _, path in rule.file_args(argv[0], argv[1:])]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["cat"], []),
        (["cat", "a", "-n", "b"], ["a", "b"]),  # GNU permutes: options after operands
        (["cat", "-vn", "a"], ["a"]),  # combined short flags
        (["cat", "--", "-n", "--help"], ["-n", "--help"]),  # after --, operands
        (["cat", "-"], ["-"]),
        (["head", "-n5", "a"], ["a"]),  # attached value
        (["head", "-n", "5", "a"], ["a"]),  # value in the next argument
        (["head", "-n", "-5", "a"], ["a"]),  # a value that looks like an option
        (["head", "--lines=3", "a"], ["a"]),
        (["head", "--lines", "3", "a"], ["a"]),
        (["head", "-qn3", "a"], ["a"]),
        (["head", "-5", "a"], ["a"]),  # -NUM
        (["tail", "-fn", "2", "a"], ["a"]),
        (["tail", "--follow=name", "a"], ["a"]),
        (["tail", "--follow", "a"], ["a"]),  # an optional value is only ever attached
        (["grep", "pat", "a", "b"], ["a", "b"]),  # the first operand is the pattern
        (["grep", "-e", "pat", "a"], ["a"]),
        (["grep", "-epat", "a"], ["a"]),
        (["grep", "-e", "-r", "a"], ["a"]),  # "-r" is -e's value here, not an option
        (["grep", "-f", "pats", "a"], ["pats", "a"]),  # -f FILE is a file, then no pattern operand
        (["grep", "--file=pats", "a"], ["pats", "a"]),
        (["grep", "-if", "pats"], ["pats"]),
        (["grep", "--color=always", "x", "a"], ["a"]),
        (["grep", "-2", "x", "a"], ["a"]),
        (["date", "+%Y"], []),
        (["date", "-Iseconds"], []),
        (["date", "-uR"], []),
        (["date", "-r", "f"], ["f"]),
        (["date", "--reference=f"], ["f"]),
        (["date", "-d", "tomorrow", "+%F"], []),
        (["ls", "-la", "--sort=size", "d"], ["d"]),
        (["ls", "-w", "80", "d"], ["d"]),
        (["du", "-sh", "-X", "ex", "d"], ["ex", "d"]),
        (["df", "-h", "--output=source", "d"], ["d"]),
        (["echo", "-n", "/etc/passwd"], []),  # echo: text, never files
        (["id", "-un", "root"], []),
        (["free", "-s", "1", "-c", "2"], []),
    ],
)
def test_file_arguments_are_found_however_spelled(argv: list[str], expected: list[str]) -> None:
    assert files(argv) == expected


@pytest.mark.parametrize(
    ("argv", "rule", "message"),
    [
        (["date", "-s", "x"], "args.option", "sets the system clock"),
        (["date", "--set=x"], "args.option", "sets the system clock"),
        (["date", "-us", "x"], "args.option", "sets the system clock"),  # inside a cluster
        (["date", "--se", "x"], "args.option", "spelled out"),  # getopt would read --set
        (["date", "0101"], "args.operand", "sets the system clock"),
        (["date", "-d", "now", "0101"], "args.operand", "sets the system clock"),
        (["date", "+%Y", "+%m"], "args.operand", "sets the system clock"),
        (["grep", "-r", "x"], "args.option", "directory trees"),
        (["grep", "-nR", "x"], "args.option", "directory trees"),
        (["grep", "--directories=recurse", "x"], "args.option", "-r"),
        (["grep", "--include=*.py", "x"], "args.option", "not in the policy's built-in rules"),
        (["ls", "-laR"], "args.option", "directory trees"),
        (["wc", "--files0-from=list"], "args.option", "cannot be confined"),
        (["du", "-L", "."], "args.option", "symlink"),
        (["du", "-ah", "."], "args.option", "every file's name"),
        (["tail", "-x", "a"], "args.option", "'-x'"),
        (["pwd", "extra"], "args.operand", "no operands"),
        (["uname", "-a", "x"], "args.operand", "no operands"),
    ],
)
def test_refusals_name_the_rule(argv: list[str], rule: str, message: str) -> None:
    with pytest.raises(PolicyRefusal, match=message) as caught:
        files(argv)
    assert caught.value.rule == rule
    assert "unchecked" in caught.value.allow or "never" in caught.value.allow


@pytest.mark.parametrize("argv", [["head", "-n"], ["grep", "-e"], ["cat", "--number=3"]])
def test_a_malformed_option_is_a_value_error(argv: list[str]) -> None:
    with pytest.raises(ValueError, match=r"needs a value|takes no value") as caught:
        files(argv)
    assert not isinstance(caught.value, PolicyRefusal)


def test_an_unknown_option_lists_the_allowed_ones() -> None:
    with pytest.raises(PolicyRefusal) as caught:
        files(["cat", "-Z"])
    assert "-n" in caught.value.allow
    assert "--show-all" in caught.value.allow


def test_every_rule_knows_help_and_version_and_an_absolute_path_finds_its_rule() -> None:
    for name, rule in RULES.items():
        if rule.parse:
            assert rule.file_args(name, ["--help", "--version"]) == []
    assert rule_for("/usr/bin/cat") is RULES["cat"]
    assert rule_for("python3") is None
