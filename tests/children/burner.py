"""A process whose CPU use is known: burns --cpu seconds of CPU, says so, then idles until a line.

    python tests/children/burner.py --cpu 0.5
    python tests/children/burner.py --cpu 0.1 --child-cpu 1.0 [--child-session] [--orphan]

With --child-cpu it first starts a burner of its own that burns that much (in a session of its
own with --child-session, given --child-args too) and says `burned X child PID` once both have
burned; with
--zombie-child, once that child has also ended, not reaped yet. On the first line it gets, it
ends that child and reaps it, says `reaped`, and idles until a second line; with --orphan it
exits at once instead, leaving the child to end (its stdin closes) with no parent.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cpu", type=float, required=True)
    p.add_argument("--child-cpu", type=float)
    p.add_argument("--child-session", action="store_true")
    p.add_argument("--orphan", action="store_true")
    p.add_argument("--zombie-child", action="store_true")
    p.add_argument("--child-args", default="", help="more arguments for the child")
    args = p.parse_args()
    child = None
    if args.child_cpu is not None:
        child = subprocess.Popen(
            [sys.executable, __file__, "--cpu", str(args.child_cpu), *args.child_args.split()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=args.child_session,
        )  # fmt: skip
        assert child.stdout is not None
        child.stdout.readline()  # it has burned
        if args.zombie_child:
            child.stdin.close()  # type: ignore[union-attr]
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped
    start = time.process_time()
    x = 0
    while time.process_time() - start < args.cpu:
        x += 1
    said = f"burned {time.process_time() - start:.3f}"
    print(f"{said} child {child.pid}" if child else said, flush=True)
    sys.stdin.readline()
    if child is None or args.orphan:
        return 0
    if args.zombie_child:
        child.wait()
    else:
        child.communicate("\n")  # it ends; reaped here
    print("reaped", flush=True)
    sys.stdin.readline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
