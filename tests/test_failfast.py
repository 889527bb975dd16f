"""Fail fast: the first trials all failing the same way early stop the sweep (mock runner)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seel.cli import app
from seel.failfast import FIRST, FailFast
from seel.grid import GridSource
from seel.outcome import Outcome, Status
from seel.scheduler import Scheduler
from seel.space import TrialSpec
from tests.test_scheduler import Events, outcome, trials
from tests.test_trial_fake import assert_no_process_left, ledger, write_sweep

MISSING = "aggregator: Unable to load training data from path provided in config file: data/mnist.npz"


def failed(
    index: int, status: Status = Status.FAILED, phase: str = "init", reason: str = MISSING
) -> Outcome:
    trial = TrialSpec(trial_id=f"t{index:05d}", index=index, params={}, repeat=0, seed=0)
    return replace(outcome(trial, status, 1), phase=phase, reason=reason)


def ok(index: int) -> Outcome:
    trial = TrialSpec(trial_id=f"t{index:05d}", index=index, params={}, repeat=0, seed=0)
    return outcome(trial, Status.OK, 1)


# -- the rule -------------------------------------------------------------------------------


def test_first_trials_failing_alike_early_stop_the_sweep() -> None:
    guard = FailFast()
    assert [guard.tell(failed(i)) for i in range(FIRST - 1)] == [None] * (FIRST - 1)
    verdict = guard.tell(failed(FIRST - 1))
    assert verdict is not None and guard.verdict == verdict
    assert verdict.startswith(f"stopped: the first {FIRST} trials all ended failed in init")
    assert MISSING in verdict and "--keep-going" in verdict
    assert "\n" not in verdict


def test_reasons_differing_only_in_numbers_are_the_same() -> None:
    guard = FailFast()
    reasons = [f"party0: OSError: [Errno 98] Address already in use: 127.0.0.1:{6000 + i}" for i in range(FIRST)]
    verdicts = [guard.tell(failed(i, phase="start", reason=r)) for i, r in enumerate(reasons)]
    assert verdicts[-1] is not None


@pytest.mark.parametrize(
    "other",
    [
        ok(9),
        failed(9, reason="aggregator: something else"),
        failed(9, phase="start"),
        failed(9, status=Status.CRASHED),
        failed(9, phase="train"),  # a training failure may be what a parameter does: a finding
        failed(9, status=Status.TIMEOUT, phase="eval"),
    ],
)
def test_one_trial_ending_otherwise_settles_it_for_good(other: Outcome) -> None:
    guard = FailFast()
    guard.tell(failed(0))
    assert guard.tell(other) is None
    assert all(guard.tell(failed(i)) is None for i in range(1, 10))
    assert guard.verdict is None


def test_a_late_phase_first_failure_never_stops() -> None:
    guard = FailFast()
    assert all(guard.tell(failed(i, phase="train")) is None for i in range(10))


def test_interrupted_trials_do_not_count() -> None:
    guard = FailFast()
    trial = TrialSpec(trial_id="t00009", index=9, params={}, repeat=0, seed=0)
    guard.tell(failed(0))
    assert guard.tell(outcome(trial, Status.INTERRUPTED, 1)) is None
    assert guard.tell(failed(1)) is None
    assert guard.tell(failed(2)) is not None


def test_early_timeouts_alike_count_too() -> None:
    guard = FailFast()
    reason = "aggregator: 'Aggregator initialization successful' not seen within the init timeout of 120 s"
    verdicts = [guard.tell(failed(i, status=Status.TIMEOUT, reason=reason)) for i in range(FIRST)]
    assert verdicts[-1] is not None


# -- the scheduler consults it --------------------------------------------------------------


class BrokenSetupRunner:
    """Every trial fails at init like the last; trials after the first few wait on a gate."""

    def __init__(self, fail: set[str] | None = None, hold_after: int = FIRST) -> None:
        self.fail = fail
        self.hold_after = hold_after
        self.gate = asyncio.Event()
        self.started: list[str] = []
        self.cancelled: list[str] = []

    def stop(self, trial_id: str, status: Status, reason: str) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def run(self, trial: TrialSpec, attempt: int) -> Outcome:
        self.started.append(trial.trial_id)
        try:
            if trial.index >= self.hold_after:
                await self.gate.wait()
            else:
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled.append(trial.trial_id)
            return replace(failed(trial.index), status=Status.INTERRUPTED)
        if self.fail is not None and trial.trial_id not in self.fail:
            return ok(trial.index)
        return replace(failed(trial.index), trial_id=trial.trial_id)


async def test_scheduler_stops_a_broken_sweep_and_interrupts_what_runs() -> None:
    runner, recorded, sink = BrokenSetupRunner(), [], Events()
    tally = await Scheduler(
        GridSource(trials(50), 50, set()), parallel=4, retries=0,
        record=recorded.append, sink=sink, fail_fast=FailFast(),
    ).run(runner)
    assert tally.stopped is not None and tally.stopped.startswith("stopped: the first 3 trials")
    assert len(runner.started) < 50  # it did not go on failing
    assert runner.cancelled  # the one that was running went down, recorded as interrupted
    statuses = [o.status for o in recorded]
    assert statuses.count(Status.FAILED) == FIRST
    assert all(s is Status.INTERRUPTED for s in statuses[FIRST:])
    assert tally.by_status["failed"] == FIRST


async def test_keep_going_runs_every_trial() -> None:
    runner, recorded = BrokenSetupRunner(hold_after=10**6), []
    tally = await Scheduler(
        GridSource(trials(20), 20, set()), parallel=4, retries=0,
        record=recorded.append, sink=Events(), fail_fast=None,
    ).run(runner)
    assert tally.stopped is None
    assert tally.by_status == {"failed": 20}


async def test_a_sweep_that_can_run_is_never_stopped() -> None:
    fails = {f"t{i:05d}" for i in (0, 1, 3, 4, 5, 6)}  # t00002 succeeds among the first three
    runner, recorded = BrokenSetupRunner(fail=fails, hold_after=10**6), []
    tally = await Scheduler(
        GridSource(trials(12), 12, set()), parallel=1, retries=0,
        record=recorded.append, sink=Events(), fail_fast=FailFast(),
    ).run(runner)
    assert tally.stopped is None
    assert len(recorded) == 12


# -- the real binary ------------------------------------------------------------------------


def test_seel_run_stops_a_broken_setup_with_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEL_PORTS_DIR", str(tmp_path / "ports"))
    sweep = write_sweep(tmp_path, "ibmfl", agg_args="--missing-section")
    argv = ["run", str(sweep), "repeats=8", "--plain", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 1, result.output
    stopped = [line for line in result.stderr.splitlines() if "stopped:" in line]
    assert stopped == [
        "seel: stopped: the first 3 trials all ended failed in init with the same reason, so the "
        "set-up is broken: aggregator: 'NoneType' object is not callable (fix it and run again to "
        "resume, or pass --keep-going)"
    ]
    records = ledger(tmp_path / "run")
    assert len({r["trial_id"] for r in records}) == 3  # parallel 1: nothing else started
    assert_no_process_left(tmp_path / "run", 9)


def test_seel_run_keep_going_runs_them_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEL_PORTS_DIR", str(tmp_path / "ports"))
    sweep = write_sweep(tmp_path, "ibmfl", agg_args="--missing-section")
    argv = ["run", str(sweep), "repeats=4", "--plain", "--keep-going", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert "stopped:" not in result.stderr
    assert len(ledger(tmp_path / "run")) == 4
