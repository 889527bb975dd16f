"""Processes as /proc shows them (pid, parent, group, session, start time), and a process's
descendants, found by parent links.

A child leads its own session, and the stop ladder signals that session's group; a descendant that
started a session of its own (a daemon-like helper) is out of that group's reach. An engine that
says `stop_tree: true` has its ladder signal those sessions too: they are found here by walking
parent links from the child while it is alive, and each one is remembered by its start time, so a
recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    """A live process: its id, parent, group, session and start time (clock ticks since boot)."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    ticks: int


def _fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command (state first), or None if there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command is any bytes a process chose (cut at 15, maybe inside a UTF-8 character); the
    # fields after it are numbers and a state letter.
    _, paren, rest = raw.rpartition(b")")
    return rest.decode("ascii", "replace").split() if paren else None


@dataclass(frozen=True)
class Usage:
    """A process (running, or ended and not yet reaped) and what it has used."""

    proc: Proc
    zombie: bool  # ended, not yet reaped: its figures are final
    cpu_s: float  # its own user and system time
    children_cpu_s: float  # that of the children it has reaped (theirs included)
    rss_bytes: int


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def usage(pid: int) -> Usage | None:
    """The process `pid` (running, or ended and not yet reaped) and what it has used; None if
    there is no such process."""
    f = _fields(pid)
    if f is None or len(f) < 22:
        return None
    return Usage(
        _proc(pid, f),
        f[0] == "Z",
        (int(f[11]) + int(f[12])) * _TICK_S,
        (int(f[13]) + int(f[14])) * _TICK_S,
        int(f[21]) * _PAGE,
    )


def usage_snapshot() -> dict[int, Usage]:
    """Every process not yet reaped, with its CPU and memory, by pid: one read of each."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (seen := usage(int(entry))) is not None:
            found[seen.proc.pid] = seen
    return found


def _proc(pid: int, fields: list[str]) -> Proc:
    return Proc(pid, int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))


def stat(pid: int) -> Proc | None:
    """The process `pid` if it is running (not ended, not waiting to be reaped), else None."""
    fields = _fields(pid)
    if fields is None or fields[0] == "Z":  # gone, or ended and waiting to be reaped
        return None
    return _proc(pid, fields)


def start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), ended or not; None if there is no such pid."""
    fields = _fields(pid)
    return int(fields[19]) if fields else None


def snapshot() -> dict[int, Proc]:
    """Every live process, by pid."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (proc := stat(int(entry))) is not None:
            procs[proc.pid] = proc
    return procs


def descendants(pid: int, procs: dict[int, Proc] | None = None) -> list[Proc]:
    """The live descendants of `pid` (children, their children, ...)."""
    procs = snapshot() if procs is None else procs
    children: dict[int, list[Proc]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc)
    found: list[Proc] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def running(pid: int, ticks: int) -> bool:
    """Whether the process `pid` that started at `ticks` is still running (a recycled pid is not)."""
    now = stat(pid)
    return now is not None and now.ticks == ticks


def alive(proc: Proc) -> bool:
    """Whether this process (same pid and start time) is still running."""
    return running(proc.pid, proc.ticks)


class SessionTree:
    """The sessions a process's descendants opened, remembered as they are seen."""

    def __init__(self, pid: int, sid: int) -> None:
        self.pid = pid
        self.sid = sid
        self.seen: dict[int, Proc] = {}  # pid -> descendant in a session other than `sid`

    def scan(self) -> list[Proc]:
        """Look for new descendants in other sessions; returns all remembered ones still alive."""
        for proc in descendants(self.pid):
            if proc.sid != self.sid:
                self.seen.setdefault(proc.pid, proc)
        return [p for p in self.seen.values() if alive(p)]

    def signal(self, sig: signal.Signals) -> list[int]:
        """Signal the groups of every live remembered descendant; returns the groups signalled."""
        groups = sorted({p.pgid for p in self.scan()})
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        return groups

    def sessions(self) -> set[int]:
        """The sessions of every descendant seen so far."""
        return {p.sid for p in self.seen.values()}
