"""The typed events a sweep emits, and the Sink protocol of whatever shows them.

The live dashboard, the `--json` writer and the plain line printer are sinks of the same stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from seel.outcome import Outcome


@dataclass(frozen=True)
class SweepStarted:
    run_id: str
    run_dir: str
    sweep: str
    engine: str
    trial_count: int
    pending: int
    parallel: int
    parameters: dict[str, list[Any]]  # a grid's values, or the bounds of a range a search samples
    budget: bool = False  # trial_count is a search's budget, not the size of a grid


@dataclass(frozen=True)
class TrialStarted:
    trial_id: str
    params: dict[str, Any]
    repeat: int
    attempt: int


@dataclass(frozen=True)
class PhaseReached:
    trial_id: str
    process: str
    phase: str
    elapsed_s: float


@dataclass(frozen=True)
class PartyState:
    """One party reached a state: ready, started, registered, evaluated, exited."""

    trial_id: str
    party: int
    state: str


@dataclass(frozen=True)
class RoundFinished:
    trial_id: str
    round: int
    accuracy: float | None
    rounds: int | None = None


@dataclass(frozen=True)
class SweepStopping:
    """The user asked the sweep to stop (a signal): every trial is being stopped."""

    signal: str


@dataclass(frozen=True)
class TrialFinished:
    outcome: Outcome
    will_retry: bool = False


@dataclass(frozen=True)
class SearchProgress:
    """An adaptive search after a trial finished: finished trials against the budget, how many
    were pruned, and the best trial so far (for several objectives: the Pareto front), each as
    `{trial_id, values, params}` with one value per objective."""

    budget: int
    finished: int
    pruned: int
    objectives: list[str]
    directions: list[str]
    best: list[dict[str, Any]]


@dataclass(frozen=True)
class SweepFinished:
    run_id: str
    counts: dict[str, int]
    elapsed_s: float
    results: list[str]
    interrupted: bool


Event = (
    SweepStarted
    | TrialStarted
    | PhaseReached
    | PartyState
    | RoundFinished
    | TrialFinished
    | SweepStopping
    | SearchProgress
    | SweepFinished
)


class Sink(Protocol):
    """Receives every event of a sweep, in order, on the event loop: must not block."""

    def emit(self, event: Event) -> None: ...


class NullSink:
    """A sink that drops everything."""

    def emit(self, event: Event) -> None:
        pass


class FanOut:
    """Sends each event to several sinks."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)
