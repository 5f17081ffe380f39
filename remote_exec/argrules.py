"""Per-command argument rules: which options the default commands may take, and which arguments
are file paths (``policy.py`` then confines those to the allowed directories).

Arguments are read the way GNU ``getopt_long`` reads them, so that what is checked is what the
program sees: options may follow operands (GNU permutes them; ``POSIXLY_CORRECT`` cannot be set
through a run), ``--`` ends the options, short flags combine (``-vn``), a short option's value
may be attached (``-n5``) or the next argument, a long option's value is ``--opt=value`` or the
next argument. Two places where getopt is looser are refused instead: a long option must be
spelled out (getopt takes any unambiguous prefix, so ``date --se`` would be ``--set``), and an
option these rules do not list is refused rather than guessed at.

Pure code, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from .refusal import PolicyRefusal

__all__ = ["RULES", "ArgRule", "rule_for"]

# What the operands (the non-option arguments) of a command are.
#   files: file paths; text: anything (not files); none: no operands;
#   date: at most one +FORMAT (any other operand of date sets the clock);
#   grep: a pattern (unless -e or -f gave one), then file paths.
Operands = Literal["files", "text", "none", "date", "grep"]

_ALWAYS = ("--help", "--version")


def _opts(spec: str) -> frozenset[str]:
    return frozenset(spec.split())


@dataclass(frozen=True, slots=True)
class ArgRule:
    """What one command's arguments may be. Option sets hold spellings (``-n``, ``--lines``)."""

    summary: str
    operands: Operands = "files"
    flags: frozenset[str] = frozenset()  # take no value
    values: frozenset[str] = frozenset()  # take a value (attached or the next argument)
    file_values: frozenset[str] = frozenset()  # take a value that is a file path
    optional: frozenset[str] = frozenset()  # take a value only when attached (-Ifmt, --color=always)
    refused: Mapping[str, str] = field(default_factory=dict)  # option -> why it is never allowed
    numeric: bool = False  # -NUM is a count (head -5, tail -5, grep -2)
    parse: bool = True  # False: every argument is an operand (echo -n is echo's own business)

    def options(self) -> list[str]:
        """Every option this rule allows, for messages and the README."""
        return sorted(self.flags | self.values | self.file_values | self.optional | set(_ALWAYS))

    def file_args(self, name: str, args: Iterable[str]) -> list[tuple[str, str]]:
        """``(where, path)`` for each argument that names a file; ``PolicyRefusal`` for an option
        or operand the rule does not allow, ``ValueError`` for an option missing its value."""
        if not self.parse:
            return []
        files: list[tuple[str, str]] = []
        operands: list[str] = []
        pattern_given = False
        items = list(args)
        i = 0
        while i < len(items):
            arg = items[i]
            i += 1
            if arg == "--":
                operands.extend(items[i:])
                break
            if arg == "-" or not arg.startswith("-"):
                operands.append(arg)
                continue
            if self.numeric and arg[1:].isascii() and arg[1:].isdigit():
                continue
            for option, value, took_next in self._read_option(name, arg, items[i] if i < len(items) else None):
                i += took_next
                if option in self.file_values and value is not None:
                    files.append((f"the value of {option}", value))
                pattern_given |= option in ("-e", "--regexp", "-f", "--file")
        files.extend(self._operand_files(name, operands, pattern_given))
        return files

    def _read_option(self, name: str, arg: str, following: str | None) -> list[tuple[str, str | None, int]]:
        """The options in one argument, each as ``(option, value, 1 if the value was the next argument)``."""
        if arg.startswith("--"):
            option, eq, attached = arg.partition("=")
            self._check_known(name, option)
            if option in self.optional:
                return [(option, attached if eq else None, 0)]
            if option in self.values or option in self.file_values:
                if eq:
                    return [(option, attached, 0)]
                return [(option, self._value(name, option, following), 1)]
            if eq:
                raise ValueError(f"{name}: option {option} takes no value (got {arg!r})")
            return [(option, None, 0)]
        found: list[tuple[str, str | None, int]] = []
        for pos in range(1, len(arg)):
            option = "-" + arg[pos]
            self._check_known(name, option)
            rest = arg[pos + 1 :]
            if option in self.optional:
                found.append((option, rest or None, 0))
                break
            if option in self.values or option in self.file_values:
                found.append((option, rest, 0) if rest else (option, self._value(name, option, following), 1))
                break
            found.append((option, None, 0))
        return found

    @staticmethod
    def _value(name: str, option: str, following: str | None) -> str:
        if following is None:
            raise ValueError(f"{name}: option {option} needs a value")
        return following

    def _check_known(self, name: str, option: str) -> None:
        why = self.refused.get(option)
        if why is not None:
            raise PolicyRefusal(
                f"{name} {option} is not allowed by the policy: {why}",
                rule="args.option",
                allow=f"not with the built-in rules for {name}; {_unchecked_hint(name)}",
            )
        if option in _ALWAYS or option in self.flags or option in self.values:
            return
        if option in self.file_values or option in self.optional:
            return
        raise PolicyRefusal(
            f"{name}: option {option!r} is not in the policy's built-in rules for {name} "
            "(long options must be spelled out in full)",
            rule="args.option",
            allow=f"{name} may take: {' '.join(self.options())}; {_unchecked_hint(name)}",
        )

    def _operand_files(self, name: str, operands: list[str], pattern_given: bool) -> list[tuple[str, str]]:
        kind = self.operands
        if kind == "text" or not operands:
            return []
        if kind == "none":
            raise PolicyRefusal(
                f"{name} takes no operands under the policy's built-in rules (got {operands[0]!r})",
                rule="args.operand",
                allow=_unchecked_hint(name),
            )
        if kind == "date":
            if len(operands) > 1 or not operands[0].startswith("+"):
                raise PolicyRefusal(
                    f"date {operands[0]!r}: an operand that is not +FORMAT sets the system clock; "
                    "the policy allows date only to display (date, date +FORMAT, -u, -R, -I, -d STRING)",
                    rule="args.operand",
                    allow="setting the clock is never allowed by the built-in rules; " + _unchecked_hint(name),
                )
            return []
        if kind == "grep" and not pattern_given:
            operands = operands[1:]
        return [("a file argument", path) for path in operands]


def _unchecked_hint(name: str) -> str:
    table = f'args = {{ {name} = "unchecked" }}'
    return f"to pass {name} any arguments, run the server with a policy whose [commands] has {table}"


def rule_for(name: str) -> ArgRule | None:
    """The built-in rule for a command name (an absolute path is looked up by its last part)."""
    return RULES.get(name.rsplit("/", 1)[-1])


_TEXT = ArgRule("any arguments; none is a file", operands="text", parse=False)
_RECURSION = "it reads whole directory trees, into the data directory and past symlinks"
_FILES0 = "it reads the names of the files to open from a file, which cannot be confined"

RULES: dict[str, ArgRule] = {
    "echo": _TEXT,
    "printf": _TEXT,
    "sleep": _TEXT,
    "true": _TEXT,
    "false": _TEXT,
    "pwd": ArgRule("-L -P; no operands", operands="none", flags=_opts("-L -P --logical --physical")),
    "whoami": ArgRule("no arguments", operands="none"),
    "uptime": ArgRule("-p -s; no operands", operands="none", flags=_opts("-p -s -V -h --pretty --since")),
    "uname": ArgRule(
        "-a -s -n -r -v -m -p -i -o; no operands",
        operands="none",
        flags=_opts(
            "-a -s -n -r -v -m -p -i -o --all --kernel-name --nodename --kernel-release --kernel-version "
            "--machine --processor --hardware-platform --operating-system"
        ),
    ),
    "id": ArgRule(
        "-a -Z -g -G -n -r -u -z; operands are user names",
        operands="text",
        flags=_opts("-a -Z -g -G -n -r -u -z --context --group --groups --name --real --user --zero"),
    ),
    "free": ArgRule(
        "unit and display options, -s N, -c N; no operands",
        operands="none",
        flags=_opts(
            "-b -k -m -g -h -l -t -v -w -V --bytes --kilo --mega --giga --tera --peta --kibi --mebi --gibi "
            "--tebi --pebi --human --si --lohi --total --committed --wide"
        ),
        values=_opts("-s -c --seconds --count"),
    ),
    "date": ArgRule(
        "display only: +FORMAT, -u, -R, -I[FMT], --rfc-3339=FMT, -d STRING; -r/-f FILE confined; "
        "no -s/--set, no operand that sets the clock",
        operands="date",
        flags=_opts("-u -R --utc --universal --rfc-email --debug --resolution"),
        values=_opts("-d --date --rfc-3339"),
        file_values=_opts("-r --reference -f --file"),
        optional=_opts("-I --iso-8601"),
        refused={"-s": "it sets the system clock", "--set": "it sets the system clock"},
    ),
    "cat": ArgRule(
        "-A -b -e -E -n -s -t -T -u -v; files confined",
        flags=_opts(
            "-A -b -e -E -n -s -t -T -u -v --show-all --number-nonblank --show-ends --number --squeeze-blank "
            "--show-tabs --show-nonprinting"
        ),
    ),
    "head": ArgRule(
        "-n N, -c N, -NUM, -q -v -z; files confined",
        flags=_opts("-q -v -z --quiet --silent --verbose --zero-terminated"),
        values=_opts("-c -n --bytes --lines"),
        numeric=True,
    ),
    "tail": ArgRule(
        "-n N, -c N, -NUM, -f -F --follow, -s N, --pid, -q -v -z; files confined",
        flags=_opts("-f -F -q -v -z --retry --quiet --silent --verbose --zero-terminated"),
        values=_opts("-c -n -s --bytes --lines --sleep-interval --pid --max-unchanged-stats"),
        optional=_opts("--follow"),
        numeric=True,
    ),
    "wc": ArgRule(
        "-c -m -l -L -w; files confined; no --files0-from",
        flags=_opts("-c -m -l -L -w --bytes --chars --lines --max-line-length --words"),
        values=_opts("--total"),
        refused={"--files0-from": _FILES0},
    ),
    "grep": ArgRule(
        "matching and output options, -e PATTERN; -f FILE and files confined; no -r/-R/-d",
        operands="grep",
        flags=_opts(
            "-E -F -G -P -i -y -w -x -z -s -v -V -b -n -H -h -o -q -a -I -L -l -c -T -Z -U "
            "--extended-regexp --fixed-strings --basic-regexp --perl-regexp --ignore-case --no-ignore-case "
            "--word-regexp --line-regexp --null-data --no-messages --invert-match --byte-offset --line-number "
            "--line-buffered --with-filename --no-filename --only-matching --quiet --silent --text "
            "--files-without-match --files-with-matches --count --initial-tab --null --no-group-separator --binary"
        ),
        values=_opts(
            "-e -m -A -B -C --regexp --max-count --label --binary-files --before-context --after-context "
            "--context --group-separator"
        ),
        file_values=_opts("-f --file"),
        optional=_opts("--color --colour"),
        refused={
            "-r": _RECURSION,
            "-R": _RECURSION,
            "--recursive": _RECURSION,
            "--dereference-recursive": _RECURSION,
            "-d": "-d recurse is -r (" + _RECURSION + ")",
            "--directories": "--directories=recurse is -r (" + _RECURSION + ")",
        },
        numeric=True,
    ),
    "ls": ArgRule(
        "listing, sorting and format options; files confined; no -R",
        flags=_opts(
            "-a -A -b -B -c -C -d -D -f -F -g -G -h -H -i -k -l -L -m -n -N -o -p -q -Q -r -s -S -t -u -U -v "
            "-x -X -Z -1 --all --almost-all --author --escape --ignore-backups --directory --dired --file-type "
            "--full-time --group-directories-first --no-group --human-readable --si --dereference-command-line "
            "--dereference-command-line-symlink-to-dir --inode --kibibytes --dereference --numeric-uid-gid "
            "--literal --hide-control-chars --show-control-chars --quote-name --reverse --size --context --zero"
        ),
        values=_opts(
            "-I -T -w --block-size --format --hide --ignore --indicator-style --quoting-style --sort --time "
            "--time-style --tabsize --width"
        ),
        optional=_opts("--color --classify --hyperlink"),
        refused={"-R": _RECURSION, "--recursive": _RECURSION},
    ),
    "du": ArgRule(
        "size options, -d N, --exclude; -X FILE and files confined; no -a, no -L, no --files0-from",
        flags=_opts(
            "-0 -b -c -D -H -h -k -l -m -P -S -s -x --null --apparent-size --bytes --total "
            "--dereference-args --human-readable --inodes --count-links --no-dereference --separate-dirs --si "
            "--summarize --one-file-system"
        ),
        values=_opts("-B -d -t --block-size --max-depth --threshold --exclude --time-style"),
        file_values=_opts("-X --exclude-from"),
        optional=_opts("--time"),
        refused={
            "-L": "it follows every symlink, out of the allowed directories",
            "--dereference": "it follows every symlink, out of the allowed directories",
            "-a": "it lists every file's name below the directory, the data directory's too",
            "--all": "it lists every file's name below the directory, the data directory's too",
            "--files0-from": _FILES0,
        },
    ),
    "df": ArgRule(
        "-a -h -H -i -k -l -P -T, -B/-t/-x VALUE, --output; files confined; no --sync",
        flags=_opts(
            "-a -h -H -i -k -l -P -T -v --all --human-readable --si --inodes --local --no-sync --portability "
            "--total --print-type"
        ),
        values=_opts("-B -t -x --block-size --type --exclude-type"),
        optional=_opts("--output"),
    ),
}
