"""The disk fills up while a sweep records its results.

Expected of the controller: one line on stderr that names the file and says "No space left on
device", exit code 1 (an infrastructure failure), every trial stopped, and what was recorded
before intact: each ledger line whole (a line the disk took only part of is cut back), the
results tables of the last compaction untouched. Once there is space again, running the same
command resumes and loses nothing.

The honest fault is a small tmpfs filled to the last byte while the sweep runs (it needs the
right to mount; skipped otherwise). The same faults are also injected in this process, for the
ledger and for the results tables, where a failed write can be placed exactly.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

import seel.store
from seel.cli import app
from seel.errors import StorageError
from seel.plan import Plan
from seel.run import RunSettings, run_sweep
from seel.space import TrialSpec
from seel.store import RunDir
from tests.reliability.kit import (
    Events,
    assert_each_trial_final_once,
    assert_nothing_left,
    assert_run_clean,
    ledger_docs,
    proc_docs,
    processes_mentioning,
    spawned,
)
from tests.test_trial_fake import ListSink, write_sweep

Recovery = Callable[[str, float], None]
SEEL = [sys.executable, "-m", "seel.cli"]
NO_SPACE = "No space left on device"


def fake_sweep(tmp_path: Path, repeats: int, agg_args: str = "") -> tuple[Path, list[str]]:
    """2 x `repeats` trials of the fake, two at a time; returns the sweep and its trial ids."""
    path = write_sweep(
        tmp_path,
        "builtin",
        agg_args=agg_args,
        parameters={"party[0].fake.args": {"values": ["", "--chatter 5"]}},
    )
    doc = json.loads(path.read_text())
    doc.update(parallel=2, repeats=repeats)
    path.write_text(json.dumps(doc, indent=2))
    return path, [f"t{i:05d}" for i in range(2 * repeats)]


def one_line_error(stderr: str, path: Path) -> None:
    """The controller's own message is its last line, names `path` and says the disk is full."""
    lines = stderr.strip().splitlines()
    ours = [line for line in lines if line.startswith("seel: ")]
    assert len(ours) == 1 and lines[-1] == ours[0], stderr
    assert ours[0].startswith(f"seel: {path}") and f": {NO_SPACE}" in ours[0], stderr


# -- a real full disk ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        for pid, _ in processes_mentioning(str(tmp_path)):  # left by a failed test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the disk refuses even one more byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        size = 1 << 20
        while size:
            try:
                os.write(fd, bytes(size))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                size //= 2
    finally:
        os.close(fd)


@pytest.mark.slow
def test_disk_fills_mid_sweep(tmp_path: Path, small_disk: Path, recovery: Recovery) -> None:
    sweep, trial_ids = fake_sweep(tmp_path, 12, agg_args="--ready-after 0.1")
    run_dir = small_disk / "run"
    cmd = [*SEEL, "run", str(sweep), "--out", str(run_dir), "--json"]
    env = {**os.environ, "SEEL_PORTS_DIR": str(tmp_path / "ports")}
    with (tmp_path / "stderr.txt").open("wb") as stderr:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr)
    try:
        assert proc.stdout is not None
        events = Events(proc.stdout)
        finished = []
        while len(finished) < 3:
            doc = events.until("trial_finished", 60)
            assert doc is not None, (tmp_path / "stderr.txt").read_text()
            finished.append(doc["trial"])
        fill(small_disk / "filler")
        filled = time.monotonic()
        events.rest(60)
        status = proc.wait(60)
        took = time.monotonic() - filled
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    errors = (tmp_path / "stderr.txt").read_text()
    assert status == 1, errors
    one_line_error(errors, run_dir)  # the ledger, or the folder of a trial about to start
    recovery("disk full: filled to controller exit", took)
    recorded = {d["trial_id"]: d for d in ledger_docs(run_dir)}  # every line whole
    assert all(recorded[t]["status"] == "ok" for t in finished), recorded
    assert len(recorded) < len(trial_ids)  # it stopped
    assert_nothing_left(spawned(proc_docs(run_dir)))
    assert processes_mentioning(str(tmp_path)) == []  # spawns the full disk kept unrecorded too
    assert not list(run_dir.glob(".*.tmp"))

    (small_disk / "filler").unlink()
    with (tmp_path / "stderr.txt").open("wb") as stderr:
        again = subprocess.run(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr)
    assert again.returncode == 0, (tmp_path / "stderr.txt").read_text()
    finals = assert_each_trial_final_once(run_dir, trial_ids)
    for trial_id in finished:  # recorded before the disk filled, kept as it was
        assert finals[trial_id] == recorded[trial_id]
    results = pl.read_parquet(run_dir / "results.parquet")  # a row per party, or one if none
    assert results.height == sum(max(1, len(d["parties"])) for d in finals.values())
    by_trial = dict(results.select("trial_id", "status").unique().iter_rows())
    assert by_trial == {t: d["status"] for t, d in finals.items()}
    assert_run_clean(run_dir)
    assert processes_mentioning(str(tmp_path)) == []


# -- injected: a write refused at an exact place ------------------------------------------------


def refuse_writes(monkeypatch: pytest.MonkeyPatch, name: str, after: int = 0) -> list[int]:
    """Make the disk refuse writes to files called `name` after `after` whole ones: the next one
    is taken in part, then ENOSPC. Returns the count of writes to such files."""
    real = seel.store._write_all
    calls: list[int] = []

    def write_all(fd: int, data: bytes) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(name):
            calls.append(len(data))
            if len(calls) > after:
                os.write(fd, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(seel.store, "_write_all", write_all)
    return calls


def run_cli(tmp_path: Path, sweep: Path) -> tuple[int, str]:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(sweep), "--out", str(out), "--json"])
    return result.exit_code, result.stderr


@pytest.fixture
def ports_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEL_PORTS_DIR", str(tmp_path / "ports"))


@pytest.mark.usefixtures("ports_dir")
def test_ledger_write_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep, trial_ids = fake_sweep(tmp_path, 3)
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        calls = refuse_writes(patch, "ledger.jsonl", after=2)
        status, stderr = run_cli(tmp_path, sweep)
    assert status == 1, stderr
    one_line_error(stderr, run_dir / "ledger.jsonl")
    assert len(calls) >= 3
    kept = ledger_docs(run_dir)  # the half-written line was cut back
    assert len(kept) == 2 and (run_dir / "ledger.jsonl").read_bytes().endswith(b"\n")
    assert_run_clean(run_dir)

    status, stderr = run_cli(tmp_path, sweep)
    assert status == 0, stderr
    finals = assert_each_trial_final_once(run_dir, trial_ids)
    assert {d["status"] for d in finals.values()} == {"ok"}
    assert pl.read_parquet(run_dir / "results.parquet").height == 2 * len(trial_ids)
    assert_run_clean(run_dir)


@pytest.mark.usefixtures("ports_dir")
def test_results_tables_write_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep, trial_ids = fake_sweep(tmp_path, 2)
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        refuse_writes(patch, ".results.parquet.tmp")
        status, stderr = run_cli(tmp_path, sweep)
    assert status == 1, stderr
    one_line_error(stderr, run_dir / "results.parquet")
    finals = assert_each_trial_final_once(run_dir, trial_ids)
    assert {d["status"] for d in finals.values()} == {"ok"}
    assert not (run_dir / "results.parquet").exists()
    assert not list(run_dir.glob(".*.tmp"))
    assert_run_clean(run_dir)

    status, stderr = run_cli(tmp_path, sweep)  # nothing left to run: only the tables
    assert status == 0, stderr
    assert pl.read_parquet(run_dir / "results.parquet").height == 2 * len(trial_ids)
    csv = (run_dir / "results.csv").read_bytes()

    with monkeypatch.context() as patch:
        refuse_writes(patch, ".results.csv.tmp")
        status, stderr = run_cli(tmp_path, sweep)
    assert status == 1, stderr
    one_line_error(stderr, run_dir / "results.csv")
    assert (run_dir / "results.csv").read_bytes() == csv  # the last good one, untouched
    assert not list(run_dir.glob(".*.tmp"))
    assert ledger_docs(run_dir) == list(finals.values())


def test_torn_ledger_line_is_cut_before_the_next(tmp_path: Path) -> None:
    # A crash in the middle of a write leaves a line without its newline; the next record must
    # not be glued to it.
    run_dir = tmp_path / "run"
    RunDir(run_dir, "f").close()
    whole = '{"trial_id":"t00000","status":"ok"}\n'
    (run_dir / "ledger.jsonl").write_text(whole + '{"trial_id":"t00001","sta')
    RunDir(run_dir, "f").close()
    assert (run_dir / "ledger.jsonl").read_text() == whole


# -- a trial's own files -----------------------------------------------------------------------


async def test_trial_whose_configs_cannot_be_written_is_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while writing a trial's configs stops the sweep; it is not the trial's result."""
    sweep, _ = fake_sweep(tmp_path, 1)
    real = Plan.write_configs

    def write_configs(self: Plan, trial: TrialSpec, ports: list[int], trial_dir: Path) -> Any:
        if trial.trial_id == "t00001":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(trial_dir))
        return real(self, trial, ports, trial_dir)

    settings = RunSettings(sweep=sweep, out=tmp_path / "run", ports_dir=tmp_path / "ports")
    with monkeypatch.context() as patch:
        patch.setattr(Plan, "write_configs", write_configs)
        with pytest.raises(StorageError, match=NO_SPACE):
            await run_sweep(settings, ListSink())
    assert [d for d in ledger_docs(tmp_path / "run") if d["trial_id"] == "t00001"] == []
    assert_run_clean(tmp_path / "run")
    await run_sweep(settings, ListSink())  # space again: the resume runs it
    finals = {d["trial_id"]: d["status"] for d in ledger_docs(tmp_path / "run")}
    assert finals.get("t00001") == "ok"
