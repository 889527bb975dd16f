"""The scheduler: takes trials from a source, runs up to N at once through a runner, records them.

Two seams are explicit so that other sources and other places to run fit without changes here:
- a TrialSource hands out trials and is told each outcome (a grid today; an ask/tell optimizer
  such as Optuna's TPE can implement the same two methods);
- a Runner turns a trial into an Outcome (local processes today; a worker on another machine,
  such as a Ray actor, can implement the same coroutine).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from seel.events import Sink, TrialFinished, TrialStarted
from seel.outcome import Outcome, Status
from seel.sweep import TrialSpec


class TrialSource(Protocol):
    """Where trials come from."""

    def next_trial(self) -> TrialSpec | None:
        """The next trial to run, or None when there is nothing more to run now."""
        ...

    def tell(self, outcome: Outcome) -> None:
        """Report a finished trial."""
        ...


class Runner(Protocol):
    """Where trials run."""

    async def run(self, trial: TrialSpec, attempt: int) -> Outcome:
        """Run a trial to its outcome (a failing trial is an outcome, not an exception)."""
        ...


class GridSource:
    """Every trial of an expansion, in order, minus those already done."""

    def __init__(self, trials: Iterator[TrialSpec], done: set[str]) -> None:
        self._trials = trials
        self._done = done

    def next_trial(self) -> TrialSpec | None:
        for trial in self._trials:
            if trial.trial_id not in self._done:
                return trial
        return None

    def tell(self, outcome: Outcome) -> None:
        if outcome.status is not Status.INTERRUPTED:
            self._done.add(outcome.trial_id)


@dataclass
class Tally:
    """Counts of finished trials by status, and of infrastructure failures after retries."""

    by_status: Counter[str] = field(default_factory=Counter)
    infrastructure_failures: int = 0
    retried: int = 0


class Scheduler:
    """Runs trials with bounded parallelism, retries infrastructure failures, records outcomes."""

    def __init__(
        self,
        source: TrialSource,
        runner: Runner,
        *,
        parallel: int,
        retries: int,
        record: Callable[[Outcome], None],
        sink: Sink,
    ) -> None:
        self.source = source
        self.runner = runner
        self.parallel = max(1, parallel)
        self.retries = retries
        self.record = record
        self.sink = sink
        self.tally = Tally()

    def _finish(self, outcome: Outcome) -> None:
        self.record(outcome)
        self.source.tell(outcome)
        self.tally.by_status[str(outcome.status)] += 1
        if outcome.retryable:
            self.tally.infrastructure_failures += 1
        self.sink.emit(TrialFinished(outcome))

    async def run(self) -> Tally:
        """Run until the source is exhausted; on cancellation or an error, stop every running trial
        and record what it returns."""
        running: dict[asyncio.Task[Outcome], tuple[TrialSpec, int]] = {}
        retry: deque[tuple[TrialSpec, int]] = deque()
        try:
            while True:
                while len(running) < self.parallel:
                    if retry:
                        trial, attempt = retry.popleft()
                    else:
                        next_trial = self.source.next_trial()
                        if next_trial is None:
                            break
                        trial, attempt = next_trial, 1
                    self.sink.emit(
                        TrialStarted(trial.trial_id, dict(trial.params), trial.repeat, attempt)
                    )
                    running[asyncio.create_task(self.runner.run(trial, attempt))] = (trial, attempt)
                if not running:
                    return self.tally
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    trial, attempt = running.pop(task)
                    outcome = task.result()
                    if outcome.retryable and attempt <= self.retries:
                        self.tally.retried += 1
                        self.sink.emit(TrialFinished(outcome, will_retry=True))
                        retry.append((trial, attempt + 1))
                    else:
                        self._finish(outcome)
        except BaseException:
            # Cancelled, or an outcome could not be recorded (a full disk): no trial outlives
            # the loop. Each is stopped, and recorded if it still can be.
            for task in running:
                task.cancel()
            results = await asyncio.gather(*running, return_exceptions=True)
            for result in results:
                if isinstance(result, Outcome):
                    self._finish(result)
            raise
