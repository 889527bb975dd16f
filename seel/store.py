"""A run directory: the plan, the results ledger, the process ledger and the results tables.

    RUN_DIR/plan.json        what is being swept (checked on resume)
    RUN_DIR/ledger.jsonl     one fsync'd JSON line per finished trial: the source of truth
    RUN_DIR/procs.jsonl      every process spawned and reaped, to find strays after a crash
    RUN_DIR/results.parquet  one row per trial x party, compacted from the ledger with polars
    RUN_DIR/results.csv      the same, as CSV
    RUN_DIR/trials/ID/       each trial's configs, transcripts and outcome.json

A trial counts as done once its final line is in the ledger. A line with status `interrupted`
is kept for the record but the trial is run again on resume; the latest line of a trial wins.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from seel.errors import RunDirError
from seel.outcome import Outcome, Status

RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"


def _proc_start_ticks(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot, or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _fsync_line(handle: IO[str], doc: dict[str, Any]) -> None:
    handle.write(json.dumps(doc, separators=(",", ":")) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def read_ledger(path: Path) -> Iterator[dict[str, Any]]:
    """The ledger's records in order; a torn last line (a crash mid-write) is skipped."""
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        return
    with handle:
        for raw in handle:
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                yield doc


class RunDir:
    """An open run directory, locked against a second controller."""

    def __init__(self, path: Path, plan: dict[str, Any]) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        (path / "trials").mkdir(exist_ok=True)
        self._lock = (path / ".lock").open("a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            owner = self._lock.read().strip() or "?"
            self._lock.close()
            raise RunDirError(
                f"{path}: another seel run (pid {owner}) is using this run directory"
            ) from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        plan_path = path / "plan.json"
        if plan_path.exists():
            old = json.loads(plan_path.read_text())
            if old.get("fingerprint") != plan.get("fingerprint"):
                self.close()
                raise RunDirError(
                    f"{path}: holds the results of a different sweep ({old.get('sweep')}); "
                    "use another --out directory"
                )
            self.resumed = True
            plan = old
        else:
            tmp = plan_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(plan, indent=2))
            tmp.replace(plan_path)
            self.resumed = False
        self.plan = plan
        self.ledger_path = path / "ledger.jsonl"
        self._ledger = self.ledger_path.open("a", encoding="utf-8")
        self._procs = (path / "procs.jsonl").open("a", encoding="utf-8")

    def close(self) -> None:
        for handle in ("_ledger", "_procs"):
            with contextlib.suppress(AttributeError):
                getattr(self, handle).close()
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    def trial_dir(self, trial_id: str) -> Path:
        return self.path / "trials" / trial_id

    # -- results ledger -------------------------------------------------------------------

    def done_ids(self) -> set[str]:
        """Trials whose latest record is final (anything but interrupted)."""
        latest: dict[str, str] = {}
        for doc in read_ledger(self.ledger_path):
            latest[str(doc.get("trial_id"))] = str(doc.get("status"))
        return {tid for tid, status in latest.items() if status != Status.INTERRUPTED}

    def record(self, outcome: Outcome) -> None:
        """Append a finished trial to the ledger, durably."""
        doc = outcome.to_json()
        _fsync_line(self._ledger, doc)
        with contextlib.suppress(OSError):
            (self.trial_dir(outcome.trial_id) / "outcome.json").write_text(
                json.dumps(doc, indent=2)
            )

    # -- process ledger -------------------------------------------------------------------

    def record_spawn(self, trial_id: str, name: str, pid: int, pgid: int) -> None:
        _fsync_line(
            self._procs,
            {
                "event": "spawn",
                "trial": trial_id,
                "name": name,
                "pid": pid,
                "pgid": pgid,
                "ticks": _proc_start_ticks(pid),
            },
        )

    def record_reaped(self, pid: int) -> None:
        _fsync_line(self._procs, {"event": "reaped", "pid": pid})

    def stop_strays(self, grace_s: float = 2.0) -> list[int]:
        """Kill processes a dead controller left behind; returns their pids.

        A pid counts only if its start time matches the one recorded at spawn, so a recycled pid
        is never signalled.
        """
        spawned: dict[int, dict[str, Any]] = {}
        for doc in read_ledger(self.path / "procs.jsonl"):
            if doc.get("event") == "spawn":
                spawned[int(doc["pid"])] = doc
            elif doc.get("event") == "reaped":
                spawned.pop(int(doc["pid"]), None)
        strays = [
            doc
            for pid, doc in spawned.items()
            if doc.get("ticks") and _proc_start_ticks(pid) == doc["ticks"]
        ]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for doc in strays:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(doc["pgid"]), sig)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and any(_proc_start_ticks(d["pid"]) for d in strays):
                time.sleep(
                    0.05
                )  # processes that are not our children: no pidfd wait; run in a thread
        self._procs.truncate(0)
        return [int(d["pid"]) for d in strays]

    # -- tables ---------------------------------------------------------------------------

    def compact(self, chunk: int = 500) -> list[Path]:
        """Write results.parquet and results.csv from the ledger (latest record per trial).

        Two passes keep memory flat however long the ledger: the first finds each trial's latest
        line, the second turns those into table rows a chunk at a time.
        """
        import polars as pl

        latest: dict[str, int] = {}
        for number, doc in enumerate(read_ledger(self.ledger_path)):
            latest[str(doc.get("trial_id"))] = number
        keep = set(latest.values())
        frames: list[pl.DataFrame] = []
        rows: list[dict[str, Any]] = []
        for number, doc in enumerate(read_ledger(self.ledger_path)):
            if number in keep:
                rows += result_rows(doc)
            if len(rows) >= chunk:
                frames.append(pl.from_dicts(rows, infer_schema_length=None))
                rows = []
        if rows:
            frames.append(pl.from_dicts(rows, infer_schema_length=None))
        frame = (
            pl.concat(frames, how="diagonal_relaxed").sort("index", "party")
            if frames
            else pl.DataFrame()
        )
        written = []
        for name, write in ((RESULTS_PARQUET, frame.write_parquet), (RESULTS_CSV, frame.write_csv)):
            tmp = self.path / f".{name}.tmp"
            write(tmp)
            tmp.replace(self.path / name)
            written.append(self.path / name)
        return written


def result_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One ledger record as table rows: one per party (a trial with no party gets one row).

    Columns: the trial's fields, one column per swept parameter (named as in the sweep file) and
    one per metric the party printed (named as the engine names it: `acc`, `precision weighted`).
    """
    base: dict[str, Any] = {
        "trial_id": doc["trial_id"],
        "index": doc["index"],
        **doc["params"],
        "repeat": doc["repeat"],
        "seed": doc["seed"],
        "status": doc["status"],
        "phase": doc["phase"],
        "reason": doc["reason"],
        "attempts": doc["attempts"],
        "elapsed_s": doc["elapsed_s"],
        **{f"duration.{k}_s": v for k, v in doc["durations"].items()},
        "rounds_completed": doc["rounds_completed"],
        "final_global_acc": (doc["round_accuracies"] or [None])[-1],
        "aggregator_exit": doc["aggregator_exit"],
    }
    parties = doc.get("parties") or []
    if not parties:
        return [{**base, "party": None}]
    return [
        {**base, "party": p["index"], "party_exit": p["exit_code"], **p["metrics"]} for p in parties
    ]
