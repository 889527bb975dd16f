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
from pathlib import Path
from typing import IO, Any

from seel.proctree import running, snapshot, start_ticks, stat
from seel.store import fsync_line, read_ledger, storage_error

RUN_ENV = "SEEL_RUN_ID"  # in the environment of every process a run starts


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return entry in environ.split(b"\0")


class ProcessLedger:
    """An append-only ledger of spawned and reaped processes, opened for appending.

    Without a path it records nothing: for a machine whose processes die with their owner
    (a Ray node's, seel/lifeline.py), where no resume will ever look for them.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._procs: IO[bytes] | None = None
        if path is not None:
            try:
                self._procs = path.open("ab", buffering=0)
            except OSError as exc:
                raise storage_error(exc, path) from None

    def close(self) -> None:
        if self._procs is not None:
            self._procs.close()

    def spawned(self, trial_id: str, name: str, pid: int, pgid: int) -> None:
        """Note a process, to find it after a crash; StorageError if it cannot be written."""
        if self._procs is None or self.path is None:
            return
        doc = {
            "event": "spawn",
            "trial": trial_id,
            "name": name,
            "pid": pid,
            "pgid": pgid,
            "ticks": start_ticks(pid),
        }
        try:
            fsync_line(self._procs, doc)
        except OSError as exc:
            raise storage_error(exc, self.path) from None

    def reaped(self, pid: int) -> None:
        """Note a process as gone. Best effort: without the line, a resume checks the pid's start
        time, which no longer matches."""
        if self._procs is not None:
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
        if self.path is None or self._procs is None:
            return []  # nothing recorded: nothing to look for
        spawned: dict[int, dict[str, Any]] = {}
        for doc in read_ledger(self.path):
            if doc.get("event") == "spawn":
                spawned[int(doc["pid"])] = doc
            elif doc.get("event") == "reaped":
                spawned.pop(int(doc["pid"]), None)
        groups: dict[int, int] = {}  # group -> its leader's start ticks
        for pid, doc in spawned.items():
            ticks = doc.get("ticks")
            now = stat(pid)
            if ticks and (now is None or now.ticks == ticks):  # ours, or gone
                groups[int(doc["pgid"])] = int(ticks)
        strays: dict[int, tuple[int, int]] = {}  # pid -> (group, start ticks)
        for pid, proc in snapshot().items():
            pgid, session, ticks = proc.pgid, proc.sid, proc.ticks
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
            left = {pgid for pid, (pgid, ticks) in strays.items() if running(pid, ticks)}
            for pgid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            deadline = time.monotonic() + grace_s
            while left and time.monotonic() < deadline:
                if not any(running(pid, ticks) for pid, (_, ticks) in strays.items()):
                    break
                time.sleep(0.05)  # processes that are not our children: no pidfd wait
        self._procs.truncate(0)
        return sorted(strays)
