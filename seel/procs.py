"""The process ledger: every process a run spawns and reaps, to find what a dead controller left.

    procs.jsonl   {"event": "spawn", "trial", "name", "pid", "pgid", "ticks"} and
                  {"event": "reaped", "pid"}, one fsync'd line each

Each machine that runs trials keeps one (the controller's run directory, or a worker node's own).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seel.store import fsync_line, read_ledger, storage_error


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command (state first), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _proc_start_ticks(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot, or None if it does not exist."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def _alive(pid: int, ticks: int) -> bool:
    """Whether the process that started at `ticks` is running (a zombie has ended)."""
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == ticks


def _live_processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, stat fields) of every process that has not ended."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _proc_stat(int(entry))) and fields[0] != "Z":
            yield int(entry), fields


RUN_ENV = "SEEL_RUN_ID"  # in the environment of every process a run starts


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return entry in environ.split(b"\0")


class ProcessLedger:
    """An append-only ledger of spawned and reaped processes, opened for appending."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._procs = path.open("ab", buffering=0)
        except OSError as exc:
            raise storage_error(exc, path) from None

    def close(self) -> None:
        self._procs.close()

    def spawned(self, trial_id: str, name: str, pid: int, pgid: int) -> None:
        """Note a process, to find it after a crash; StorageError if it cannot be written."""
        doc = {
            "event": "spawn",
            "trial": trial_id,
            "name": name,
            "pid": pid,
            "pgid": pgid,
            "ticks": _proc_start_ticks(pid),
        }
        try:
            fsync_line(self._procs, doc)
        except OSError as exc:
            raise storage_error(exc, self.path) from None

    def reaped(self, pid: int) -> None:
        """Note a process as gone. Best effort: without the line, a resume checks the pid's start
        time, which no longer matches."""
        with contextlib.suppress(OSError):
            fsync_line(self._procs, {"event": "reaped", "pid": pid})

    def stop_strays(self, run_id: str | None, grace_s: float = 2.0) -> list[int]:
        """Kill processes a dead controller left behind; returns their pids.

        What is left of a child is its process group: the child, if its start time matches the
        one recorded at spawn (so a recycled pid is never signalled), and whatever it started
        there, which may outlive it. A group whose leader is gone is still the child's while it
        has a member, as a group id is not reused until then; a member must also be in the
        child's session and have started after it.
        """
        spawned: dict[int, dict[str, Any]] = {}
        for doc in read_ledger(self.path):
            if doc.get("event") == "spawn":
                spawned[int(doc["pid"])] = doc
            elif doc.get("event") == "reaped":
                spawned.pop(int(doc["pid"]), None)
        groups: dict[int, int] = {}  # group -> its leader's start ticks
        for pid, doc in spawned.items():
            ticks = doc.get("ticks")
            if ticks and _proc_start_ticks(pid) in (ticks, None):  # ours, or gone
                groups[int(doc["pgid"])] = int(ticks)
        strays: dict[int, tuple[int, int]] = {}  # pid -> (group, start ticks)
        for pid, fields in _live_processes():
            pgid, session, ticks = int(fields[2]), int(fields[3]), int(fields[19])
            if pgid in groups and session == pgid and ticks >= groups[pgid]:
                strays[pid] = (pgid, ticks)
            elif (
                run_id and pid != os.getpid() and _environ_has(pid, f"{RUN_ENV}={run_id}".encode())
            ):
                # started with this run's mark, but never recorded: the controller died between
                # spawning it and writing the spawn line
                strays[pid] = (pgid, ticks)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            # Only groups with a member still alive: an emptied group's id may be reused.
            left = {pgid for pid, (pgid, ticks) in strays.items() if _alive(pid, ticks)}
            for pgid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            deadline = time.monotonic() + grace_s
            while left and time.monotonic() < deadline:
                if not any(_alive(pid, ticks) for pid, (_, ticks) in strays.items()):
                    break
                time.sleep(0.05)  # processes that are not our children: no pidfd wait
        self._procs.truncate(0)
        return sorted(strays)
