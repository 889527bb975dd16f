"""Processes that die with their parent: the Linux parent-death signal, asked for by the child.

A trial's processes lead their own sessions (each on its own pty), so nothing takes them down when
whatever started them is killed outright. On one machine a resume finds and stops such strays; on
a Ray node the owner is a worker process that Ray kills without warning when the driver or the
node goes away, and no resume runs there. So a process spawned with `SEEL_DIE_WITH_PARENT=1` in
the environment it is given asks the kernel for SIGKILL when its parent ends:

1. the parent notes its own pid before forking;
2. the child sets PR_SET_PDEATHSIG right after the fork, before it execs or runs anything;
3. the child then compares its parent's pid with the one noted: if the parent died between the
   fork and step 2, the signal will never come, so the child ends itself.

The signal follows the thread that forked, not the process: callers fork from a thread that lives
as long as the process (the event loop's thread, or an executor thread kept until shutdown).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from seel.forkserver import DIE_WITH_PARENT_ENV as ENV  # re-exported: what callers set
from seel.forkserver import die_with_parent

__all__ = ["ENV", "die_with_parent", "preexec", "wanted"]


def wanted(env: Mapping[str, str] | None) -> bool:
    """Whether a process started with `env` must die with its parent."""
    return env is not None and env.get(ENV) == "1"


def preexec(env: Mapping[str, str] | None) -> Callable[[], None] | None:
    """A `preexec_fn` that binds the child to this process, if `env` asks for it."""
    if not wanted(env):
        return None
    parent_pid = os.getpid()
    return lambda: die_with_parent(parent_pid)
