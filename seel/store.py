"""A run directory: the manifest, the results ledger, the process ledger and the results tables.

    RUN_DIR/plan.json        the run's manifest: what is being swept (checked on resume)
    RUN_DIR/ledger.jsonl     one fsync'd JSON line per finished trial: the source of truth
    RUN_DIR/procs.jsonl      every process spawned and reaped (seel.procs), to find strays
    RUN_DIR/results.parquet  one row per trial x party, compacted from the ledger with polars
    RUN_DIR/results.csv      the same, as CSV
    RUN_DIR/trials/ID/       each trial's configs, transcripts and outcome.json

A trial counts as done once its final line is in the ledger. A line with status `interrupted`
is kept for the record but the trial is run again on resume; the latest line of a trial wins.
A line is appended whole or not at all: if the disk refuses part of it, the file is cut back to
where it was, and a line torn by a crash is cut off when the directory is opened again, so the
next line never lands on a fragment. A write that fails raises StorageError. Lines are strict
JSON written by `seel.jsonio` (a metric that is not finite is spelled `"NaN"`, `"Infinity"`); the
table columns are those of `seel.results`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from seel import jsonio
from seel.errors import RunDirError, StorageError
from seel.manifest import MANIFEST_FILE, RunManifest
from seel.outcome import Outcome, Status
from seel.results import result_rows

RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"


def storage_error(exc: OSError, path: Path) -> StorageError:
    message = f"{exc.filename or path}: {exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        message += "; what was recorded is kept: free space, then run the same command to resume"
    return StorageError(message)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_line(handle: IO[bytes], doc: dict[str, Any]) -> None:
    """Append one JSON line durably, whole or not at all; OSError if the disk refuses it."""
    fd = handle.fileno()
    size = os.fstat(fd).st_size
    try:
        _write_all(fd, (jsonio.dumps(doc) + "\n").encode())
        os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


def _cut_torn_tail(path: Path) -> None:
    """Cut off a last line that has no newline: a write the previous controller never finished."""
    try:
        handle = path.open("rb+")
    except FileNotFoundError:
        return
    with handle:
        end = keep = handle.seek(0, os.SEEK_END)
        while keep > 0:
            start = max(0, keep - (1 << 16))
            handle.seek(start)
            chunk = handle.read(keep - start)
            if keep == end and chunk.endswith(b"\n"):
                return
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            keep = start
        handle.truncate(keep)


def _replace_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: a temporary file, then a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise storage_error(exc, path) from None


def read_ledger(path: Path) -> Iterator[dict[str, Any]]:
    """The ledger's records in order; a torn last line (a crash mid-write) is skipped."""
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        return
    with handle:
        for raw in handle:
            try:
                doc = jsonio.loads(raw)
            except ValueError:
                continue
            if isinstance(doc, dict):
                yield doc


class RunDir:
    """An open run directory, locked against a second controller."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        """Open and lock `path`; RunDirError if it holds another sweep's results (a different
        fingerprint) or another controller has it."""
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / "trials").mkdir(exist_ok=True)
            self._lock = (path / ".lock").open("a+")
        except OSError as exc:
            raise storage_error(exc, path) from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            owner = self._lock.read().strip() or "?"
            self._lock.close()
            raise RunDirError(
                f"{path}: another seel run (pid {owner}) is using this run directory"
            ) from None
        with contextlib.suppress(OSError):  # the owner's pid only serves the message above
            os.ftruncate(self._lock.fileno(), 0)
            os.write(self._lock.fileno(), str(os.getpid()).encode())
        self.manifest = RunManifest.read(path)
        if self.manifest is None and (path / MANIFEST_FILE).exists():
            self.close()
            raise RunDirError(f"{path / MANIFEST_FILE}: unreadable; use another --out directory")
        if self.manifest is not None and self.manifest.fingerprint != fingerprint:
            sweep = self.manifest.sweep
            self.close()
            raise RunDirError(
                f"{path}: holds the results of a different sweep ({sweep}); "
                "use another --out directory"
            )
        self.ledger_path = path / "ledger.jsonl"
        _cut_torn_tail(self.ledger_path)
        self._ledger = self.ledger_path.open("ab", buffering=0)

    def begin(self, manifest: RunManifest) -> RunManifest:
        """The run's manifest: the one already here (a resume), else `manifest`, written now."""
        if self.manifest is None:
            _replace_file(
                self.path / MANIFEST_FILE, jsonio.dumps(manifest.to_json(), indent=2).encode()
            )
            self.manifest = manifest
        return self.manifest

    def close(self) -> None:
        with contextlib.suppress(AttributeError):
            self._ledger.close()
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
        """Append a finished trial to the ledger, durably; StorageError if it cannot be written."""
        doc = outcome.to_json()
        try:
            fsync_line(self._ledger, doc)
        except OSError as exc:
            raise storage_error(exc, self.ledger_path) from None
        with contextlib.suppress(OSError):
            (self.trial_dir(outcome.trial_id) / "outcome.json").write_text(
                jsonio.dumps(doc, indent=2)
            )

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
            # Serialized in memory, so that a full disk is an OSError from our own write, not an
            # error of the table library's.
            buffer = io.BytesIO()
            write(buffer)
            _replace_file(self.path / name, buffer.getvalue())
            written.append(self.path / name)
        return written
