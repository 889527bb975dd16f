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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


def processes_in_groups(pgids: set[int]) -> list[tuple[int, int, str]]:
    """(pid, pgid, command) of every live process whose process group is one of `pgids`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command is in parentheses and may hold spaces; fields after it are fixed
        rest = stat[stat.rindex(")") + 2 :].split()
        state, pgid = rest[0], int(rest[2])
        if pgid in pgids and state != "Z":
            found.append((int(entry), pgid, stat[stat.index("(") + 1 : stat.rindex(")")]))
    return found


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
