"""Runs in the child between fork and the command: ``python -I -S _launch.py SPEC_JSON ARGV...``.

It does what ``preexec_fn`` would, without the risk ``preexec_fn`` carries in a threaded server
(a fork can copy a lock held by another thread): it makes the pty the controlling terminal (so
Ctrl-C in the terminal reaches the foreground job, as in a real terminal), checks that the working
directory is still the one the policy approved, applies the rlimits, then ``exec``s the command in
the same process (same pid, same process group). Standard library only, imported by path.
"""

import json
import os
import sys


def main() -> None:
    spec = json.loads(sys.argv[1])
    argv = sys.argv[2:]
    try:
        if spec.get("tty"):
            import fcntl
            import termios

            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        expected = spec["cwd"]
        if os.path.realpath(os.getcwd()) != expected:
            # The directory was swapped (a symlink replaced it) between the check and the start.
            sys.stderr.write(f"remote_exec: working directory changed under us, refusing: {expected}\n")
            os._exit(126)
        import resource

        names = {"cpu": resource.RLIMIT_CPU, "as": resource.RLIMIT_AS, "nofile": resource.RLIMIT_NOFILE}
        for name, value in spec.get("rlimits", {}).items():
            which = names[name]
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))
        os.execv(spec["exe"], argv)
    except OSError as exc:
        sys.stderr.write(f"remote_exec: cannot start {argv[0]!r}: {exc.strerror or exc}\n")
        sys.stderr.flush()
        os._exit(127)


if __name__ == "__main__":
    main()
