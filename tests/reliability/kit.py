"""What every reliability scenario checks, and the record of how long each took to recover.

A scenario injects a fault, then asserts with these helpers that:
- the trial ended with the expected status and phase within its phase timeout plus 5 s,
- the sweep went on,
- the ledger is intact (every line a whole JSON document, each trial recorded once),
- no process of the sweep survives, checked by the pids *and* the process groups in the
  process ledger (`procs.jsonl`), never by name.

`recovery(name, seconds)` (a fixture in conftest.py) records the time from the fault to the
trial's end for the session summary that `make test-reliability` prints.
"""

from __future__ import annotations

import json
import os
import select
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tests import raykit

SLACK_S = 5.0


def ledger_docs(run_dir: Path) -> list[dict[str, Any]]:
    """Every line of the results ledger; fails if any line is not a whole JSON document."""
    path = run_dir / "ledger.jsonl"
    if not path.exists():
        return []
    docs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            docs.append(json.loads(line))
        except json.JSONDecodeError as exc:  # pragma: no cover - the assertion's message
            raise AssertionError(f"{path}:{n}: torn ledger line: {line[:80]!r}") from exc
    return docs


def assert_ledger_intact(
    run_dir: Path, expected_trials: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Each trial recorded exactly once (and, if given, exactly the expected set)."""
    docs = ledger_docs(run_dir)
    ids = [d["trial_id"] for d in docs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    assert not dupes, f"recorded twice: {dupes}"
    if expected_trials is not None:
        want = set(expected_trials)
        assert set(ids) == want, (
            f"missing {sorted(want - set(ids))}, extra {sorted(set(ids) - want)}"
        )
    return docs


def proc_docs(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "procs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spawned(docs: Iterable[dict[str, Any]]) -> list[tuple[int, int]]:
    """(pid, pgid) of every spawn in process-ledger documents."""
    return [(int(d["pid"]), int(d["pgid"])) for d in docs if d.get("event") == "spawn"]


def live_processes() -> Iterator[tuple[int, int, int, str]]:
    """(pid, parent pid, process group, command) of every process that has not ended."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command is in parentheses and may hold spaces; fields after it are fixed
        rest = stat[stat.rindex(")") + 2 :].split()
        if rest[0] != "Z":
            command = stat[stat.index("(") + 1 : stat.rindex(")")]
            yield int(entry), int(rest[1]), int(rest[2]), command


def processes_in_groups(pgids: set[int]) -> list[tuple[int, int, str]]:
    """(pid, pgid, command) of every live process whose process group is one of `pgids`."""
    return [(pid, pgid, cmd) for pid, _, pgid, cmd in live_processes() if pgid in pgids]


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def assert_nothing_left(pairs: Iterable[tuple[int, int]], expected: int | None = None) -> None:
    """No pid of the ledger alive and no process left in any of its process groups."""
    pairs = list(pairs)
    if expected is not None:
        assert len(pairs) == expected, f"{len(pairs)} spawns in the ledger, expected {expected}"
    alive = [pid for pid, _ in pairs if pid_alive(pid)]
    assert not alive, f"still running: {alive}"
    left = processes_in_groups({pgid for _, pgid in pairs})
    assert not left, f"left in the sweep's process groups: {left}"


def assert_run_clean(run_dir: Path, expected_spawns: int | None = None) -> None:
    assert_nothing_left(spawned(proc_docs(run_dir)), expected_spawns)


def assert_ended_in_time(
    outcome: dict[str, Any], status: str, phase: str | None, timeout_s: float
) -> float:
    """The trial's status and phase are as expected and its last phase took at most timeout_s + 5 s.

    Returns the time the last phase took: from its start (where the fault is met) to the trial's
    end, that is the recovery time.
    """
    assert outcome["status"] == status, outcome
    if phase is not None:
        assert outcome["phase"] == phase, outcome
    last = outcome["phase"]
    before = sum(v for k, v in outcome["durations"].items() if k != last)
    took = float(outcome["elapsed_s"]) - before  # the last phase, its stop ladder included
    assert took <= timeout_s + SLACK_S, (
        f"{outcome['trial_id']}: {last} took {took:.1f} s > {timeout_s} + {SLACK_S} s"
    )
    return took


def assert_phase_in_time(outcome: dict[str, Any], phase: str, timeout_s: float) -> float:
    """The phase took at most timeout_s + 5 s, in a trial of any status; returns how long it took."""
    took = float(outcome["durations"][phase])
    assert took <= timeout_s + SLACK_S, (
        f"{outcome['trial_id']}: {phase} took {took:.1f} s > {timeout_s} + {SLACK_S} s"
    )
    return took


def live_children(parent: int | None = None) -> list[tuple[int, str]]:
    """(pid, command) of every live process whose parent is `parent` (default: this process),
    but for the session's shared Ray cluster, if a test has started it (tests/raykit.py)."""
    parent = os.getpid() if parent is None else parent
    return [
        (pid, cmd)
        for pid, ppid, _, cmd in live_processes()
        if ppid == parent and not raykit.of_a_cluster(pid)
    ]


def shell_status(returncode: int) -> int:
    """An exit status as a shell reports it: 128 + N for a process ended by signal N."""
    return returncode if returncode >= 0 else 128 - returncode


class Events:
    """The `--json` events of a running controller, each read with a deadline."""

    def __init__(self, stdout: IO[bytes]) -> None:
        self._fd = stdout.fileno()
        self._buffer = b""
        self.eof = False
        self.seen: list[dict[str, Any]] = []

    def next(self, timeout_s: float) -> dict[str, Any] | None:
        """The next event, or None once the output has ended; fails if none comes in time."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            assert left > 0, f"no event within {timeout_s} s; the last: {self.seen[-1:]}"
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                chunk = os.read(self._fd, 1 << 16)
                self.eof = not chunk
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        doc: dict[str, Any] = json.loads(line)
        self.seen.append(doc)
        return doc

    def until(self, event: str, timeout_s: float) -> dict[str, Any] | None:
        """The next event named `event`, or None if the output ends first."""
        deadline = time.monotonic() + timeout_s
        while (doc := self.next(max(0.0, deadline - time.monotonic()))) is not None:
            if doc["event"] == event:
                return doc
        return None

    def rest(self, timeout_s: float) -> list[dict[str, Any]]:
        """Every event up to the end of the output."""
        deadline = time.monotonic() + timeout_s
        docs = []
        while (doc := self.next(max(0.0, deadline - time.monotonic()))) is not None:
            docs.append(doc)
        return docs


class SpawnLog:
    """Every spawn a run directory's process ledger has shown, kept across resumes (a resume
    truncates the ledger). Read it only while no controller runs on the directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._docs: dict[tuple[int, Any], dict[str, Any]] = {}

    def snapshot(self) -> list[tuple[int, int]]:
        """Take in the ledger as it is now; returns the (pid, pgid) of its spawns."""
        docs = [d for d in proc_docs(self.run_dir) if d.get("event") == "spawn"]
        for doc in docs:
            self._docs[(int(doc["pid"]), doc.get("ticks"))] = doc
        return spawned(docs)

    def pairs(self) -> list[tuple[int, int]]:
        """(pid, pgid) of every spawn seen so far."""
        return spawned(self._docs.values())


def assert_each_trial_final_once(
    run_dir: Path, expected_trials: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Every ledger line whole, and each expected trial (no other) with exactly one final record,
    its last line: an `interrupted` line (a trial stopped by a signal, run again on resume) may
    only come before it. Returns each trial's final record."""
    docs = ledger_docs(run_dir)
    statuses: dict[str, list[str]] = {}
    for doc in docs:
        statuses.setdefault(doc["trial_id"], []).append(doc["status"])
    want = set(expected_trials)
    assert set(statuses) == want, (
        f"missing {sorted(want - set(statuses))}, extra {sorted(set(statuses) - want)}"
    )
    for trial_id, seen in statuses.items():
        finals = [s for s in seen if s != "interrupted"]
        assert len(finals) == 1 and seen[-1] == finals[0], f"{trial_id}: recorded as {seen}"
    return {d["trial_id"]: d for d in docs if d["status"] != "interrupted"}


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process other than this one whose command line or
    working directory contains `text` (a test's own temporary path)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid() or not pid_alive(int(entry)):
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if text in cmdline or text in cwd:
            found.append((int(entry), cmdline.strip()))
    return found
