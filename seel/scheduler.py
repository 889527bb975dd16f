"""The scheduler: takes trials from a source, runs up to N at once through a runner, records them.

Two seams are explicit so that other sources and other places to run fit without changes here:
- a TrialSource hands out trials, sees each round a running trial reports (and may ask for it to
  be stopped early), and is told each outcome: the grid (`seel.grid`), or an ask-and-tell
  optimizer;
- a Runner turns a trial into an Outcome and can end a running one from outside: local processes
  (`seel.trial.LocalRunner`), or workers on other machines.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from seel.capacity import AutoParallel, LoadMeter
from seel.events import Event, RoundFinished, Sink, TrialFinished, TrialStarted
from seel.failfast import FailFast
from seel.outcome import Outcome, Status
from seel.space import TrialSpec


class TrialSource(Protocol):
    """Where trials come from. The sweep is over when `next_trial` gives None and no trial runs."""

    total: int  # the grid's size, or a search's budget

    def next_trial(self) -> TrialSpec | None:
        """The next trial to run, or None when there is nothing more to run now."""
        ...

    def observe(self, trial_id: str, round: int, value: float | None) -> bool:
        """A running trial finished a round with this value; True to stop it now (pruned)."""
        ...

    def tell(self, outcome: Outcome) -> None:
        """Report a finished trial."""
        ...


class Runner(Protocol):
    """Where trials run."""

    # The meter of the machine the trials run on, when this process runs them (what
    # --parallel auto reads); None when they run elsewhere.
    meter: LoadMeter | None

    async def run(self, trial: TrialSpec, attempt: int) -> Outcome:
        """Run a trial to its outcome (a failing trial is an outcome, not an exception)."""
        ...

    def stop(self, trial_id: str, status: Status, reason: str) -> None:
        """End a running trial from outside, with this status and reason."""
        ...

    async def aclose(self) -> None:
        """Release what the runner keeps between trials."""
        ...


@dataclass
class Tally:
    """Counts of finished trials by status, and of infrastructure failures after retries."""

    by_status: Counter[str] = field(default_factory=Counter)
    infrastructure_failures: int = 0
    retried: int = 0
    stopped: str | None = None  # why the sweep stopped before its end (a broken set-up)


class Scheduler:
    """Runs trials with bounded parallelism, retries infrastructure failures, records outcomes."""

    def __init__(
        self,
        source: TrialSource,
        *,
        parallel: int,
        retries: int,
        record: Callable[[Outcome], None],
        sink: Sink,
        fail_fast: FailFast | None = None,
        auto: AutoParallel | None = None,
    ) -> None:
        self.source = source
        self.runner: Runner | None = None
        self.parallel = max(1, parallel)
        self.retries = retries
        self.record = record
        self.sink = sink
        self.fail_fast = fail_fast
        self.auto = auto  # with it, `parallel` is a cap and it decides each start
        self.tally = Tally()

    def emit(self, event: Event) -> None:
        """Where a runner sends its trials' events: the source sees each round, then the sink."""
        if isinstance(event, RoundFinished) and self.runner is not None:
            if self.source.observe(event.trial_id, event.round, event.accuracy):
                self.runner.stop(event.trial_id, Status.PRUNED, f"pruned after round {event.round}")
        self.sink.emit(event)

    def _finish(self, outcome: Outcome) -> None:
        self.record(outcome)
        self.source.tell(outcome)
        if self.auto is not None:
            self.auto.learn(outcome.cpu_s, outcome.elapsed_s, outcome.peak_rss_mb)
        self.tally.by_status[str(outcome.status)] += 1
        if outcome.retryable:
            self.tally.infrastructure_failures += 1
        self.sink.emit(TrialFinished(outcome))
        if self.fail_fast is not None and self.tally.stopped is None:
            self.tally.stopped = self.fail_fast.tell(outcome)

    async def run(self, runner: Runner) -> Tally:
        """Run until the source is exhausted; on cancellation or an error, stop every running trial
        and record what it returns."""
        self.runner = runner
        running: dict[asyncio.Task[Outcome], tuple[TrialSpec, int]] = {}
        retry: deque[tuple[TrialSpec, int]] = deque()
        try:
            while True:
                if self.tally.stopped is not None:
                    await self._stop(running)
                    return self.tally
                while len(running) < self.parallel and self._may_start(len(running)):
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
                    running[asyncio.create_task(runner.run(trial, attempt))] = (trial, attempt)
                    if self.auto is not None:
                        self.auto.started()
                if not running:
                    return self.tally
                done = await self._wait(running)
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
            await self._stop(running)
            raise

    def _may_start(self, running: int) -> bool:
        return self.auto is None or self.auto.may_start(running)

    async def _wait(
        self, running: dict[asyncio.Task[Outcome], tuple[TrialSpec, int]]
    ) -> set[asyncio.Task[Outcome]]:
        """The trials that finished; with `auto`, also back after its next load sample."""
        if self.auto is None:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            return done
        self.auto.changed.clear()
        tick = asyncio.ensure_future(self.auto.changed.wait())
        try:
            finished, _ = await asyncio.wait([*running, tick], return_when=asyncio.FIRST_COMPLETED)
        finally:
            tick.cancel()
        return {task for task in running if task in finished}

    async def _stop(self, running: dict[asyncio.Task[Outcome], tuple[TrialSpec, int]]) -> None:
        """Stop every running trial and record what each returns (interrupted: run on resume)."""
        for task in running:
            task.cancel()
        results = await asyncio.gather(*running, return_exceptions=True)
        running.clear()
        for result in results:
            if isinstance(result, Outcome):
                self._finish(result)
