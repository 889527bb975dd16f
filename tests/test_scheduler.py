"""The scheduler with a mock runner: outcomes in, decisions out; no processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from seel.events import Event, RoundFinished, TrialFinished, TrialStarted
from seel.grid import GridSource
from seel.outcome import Outcome, Status
from seel.scheduler import Scheduler
from seel.space import TrialSpec


def trials(n: int) -> Iterator[TrialSpec]:
    for i in range(n):
        yield TrialSpec(trial_id=f"t{i:05d}", index=i, params={"x": i}, repeat=0, seed=0)


def outcome(trial: TrialSpec, status: Status, attempt: int, retryable: bool = False) -> Outcome:
    return Outcome(
        trial_id=trial.trial_id, index=trial.index, params=trial.params, repeat=0, seed=0,
        status=status, phase=None if status is Status.OK else "train", reason="", attempts=attempt,
        started_at=0.0, elapsed_s=0.0, durations={}, rounds_completed=None, round_accuracies=(),
        aggregator_exit=0, parties=(), ports=(), retryable=retryable,
    )


class MockRunner:
    """Decides each trial's outcome from a script; records concurrency."""

    def __init__(self, script: dict[str, list[Status]] | None = None, gate: asyncio.Event | None = None) -> None:
        self.script = script or {}
        self.gate = gate
        self.calls: list[tuple[str, int]] = []
        self.active = 0
        self.max_active = 0
        self.two_running = asyncio.Event()
        self.stopped: list[tuple[str, Status, str]] = []

    def stop(self, trial_id: str, status: Status, reason: str) -> None:
        self.stopped.append((trial_id, status, reason))

    async def aclose(self) -> None:
        pass

    async def run(self, trial: TrialSpec, attempt: int) -> Outcome:
        self.calls.append((trial.trial_id, attempt))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if self.active >= 2:
            self.two_running.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0)
            statuses = self.script.get(trial.trial_id, [Status.OK])
            status = statuses[min(attempt - 1, len(statuses) - 1)]
            return outcome(trial, status, attempt, retryable=status is Status.FAILED)
        except asyncio.CancelledError:
            return outcome(trial, Status.INTERRUPTED, attempt)
        finally:
            self.active -= 1


class Events:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


async def test_runs_everything_once_within_the_parallel_limit() -> None:
    runner, recorded, sink = MockRunner(), [], Events()
    tally = await Scheduler(GridSource(trials(10), 10, set()), parallel=3, retries=0,
                            record=recorded.append, sink=sink).run(runner)
    assert sorted(o.trial_id for o in recorded) == [f"t{i:05d}" for i in range(10)]
    assert runner.max_active == 3
    assert tally.by_status == {"ok": 10}
    assert sum(isinstance(e, TrialStarted) for e in sink.events) == 10


async def test_done_trials_are_skipped() -> None:
    runner = MockRunner()
    await Scheduler(GridSource(trials(5), 5, {"t00001", "t00003"}), parallel=2, retries=0,
                    record=lambda o: None, sink=Events()).run(runner)
    assert [c[0] for c in runner.calls] == ["t00000", "t00002", "t00004"]


async def test_infrastructure_failures_are_retried_timeouts_are_not() -> None:
    script = {"t00000": [Status.FAILED, Status.OK], "t00001": [Status.TIMEOUT], "t00002": [Status.FAILED] * 5}
    runner, recorded, sink = MockRunner(script), [], Events()
    tally = await Scheduler(GridSource(trials(3), 3, set()), parallel=1, retries=2,
                            record=recorded.append, sink=sink).run(runner)
    final = {o.trial_id: (o.status, o.attempts) for o in recorded}
    assert final == {"t00000": (Status.OK, 2), "t00001": (Status.TIMEOUT, 1), "t00002": (Status.FAILED, 3)}
    assert tally.infrastructure_failures == 1
    assert sum(1 for e in sink.events if isinstance(e, TrialFinished) and e.will_retry) == 3


async def test_cancel_records_interrupted_trials_and_grid_reruns_them() -> None:
    gate = asyncio.Event()
    runner, recorded = MockRunner(gate=gate), []
    source = GridSource(trials(4), 4, set())
    task = asyncio.create_task(Scheduler(source, parallel=2, retries=0,
                                         record=recorded.append, sink=Events()).run(runner))
    await runner.two_running.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(o.trial_id, o.status) for o in recorded] == [("t00000", Status.INTERRUPTED), ("t00001", Status.INTERRUPTED)]
    done = {o.trial_id for o in recorded if o.status is not Status.INTERRUPTED}
    assert GridSource(trials(4), 4, done).next_trial() == next(trials(1))


class PruningSource(GridSource):
    """A grid whose trials are stopped once a round's value falls below a bar."""

    def __init__(self, n: int, bar: float) -> None:
        super().__init__(trials(n), n, set())
        self.bar = bar
        self.seen: list[tuple[str, int, float | None]] = []

    def observe(self, trial_id: str, round: int, value: float | None) -> bool:
        self.seen.append((trial_id, round, value))
        return value is not None and value < self.bar


async def test_rounds_reach_the_source_and_a_weak_trial_is_stopped_as_pruned() -> None:
    runner, sink = MockRunner(), Events()
    scheduler = Scheduler(PruningSource(2, bar=0.5), parallel=2, retries=0,
                          record=lambda o: None, sink=sink)
    scheduler.runner = runner
    scheduler.emit(RoundFinished("t00000", 1, 0.9, 3))
    scheduler.emit(RoundFinished("t00001", 1, 0.2, 3))
    assert runner.stopped == [("t00001", Status.PRUNED, "pruned after round 1")]
    assert [e.trial_id for e in sink.events if isinstance(e, RoundFinished)] == ["t00000", "t00001"]
