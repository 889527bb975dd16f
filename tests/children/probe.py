"""A process that reports what it was started with, then obeys lines on stdin.

    python -m tests.children.probe ARGS...

First line: `probe {json}` with its pid, process group, session, terminal, cwd, argv and $PROBE.
Then, per line read: `echo TEXT` prints TEXT, `exit N` exits with N, `raise` raises an uncaught
error, `ignore-term` ignores SIGTERM, `warn` prints a warning, `spawn` starts a grandchild that
sleeps in the same process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings


def main() -> int:
    report = {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "tty": os.ttyname(0) if os.isatty(0) else None,
        "stdout_tty": os.isatty(1),
        "cwd": os.getcwd(),
        "argv": sys.argv[1:],
        "name": __name__,
        "env": os.environ.get("PROBE"),
        # inherited from the fork server: what it imported besides the preloaded modules
        "seel_modules": sorted(m for m in sys.modules if m == "seel" or m.startswith("seel.")),
    }
    print("probe " + json.dumps(report))
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "echo":
            print(arg)
        elif cmd == "exit":
            return int(arg)
        elif cmd == "raise":
            raise RuntimeError("probe was told to raise")
        elif cmd == "ignore-term":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ignoring SIGTERM")
        elif cmd == "warn":
            warnings.warn("probe warning", stacklevel=1)
            print("warned")
        elif cmd == "spawn":
            proc = subprocess.Popen(["sleep", "600"])
            print(f"grandchild {proc.pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
