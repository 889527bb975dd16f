"""The typed events a sweep emits, and the Sink protocol of whatever shows them.

The live dashboard, the `--json` writer and the plain line printer are sinks of the same stream.
A sink never ends a sweep: behind `isolated` (and in a `FanOut`), a sink that raises is reported
once on stderr and gets no more events, and the sweep goes on.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

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
    auto: bool = False  # `parallel` is a cap: SEEL starts trials as the machine's load allows


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
class DeploymentReused:
    """The trial runs on processes trial `deployment` started (an engine with `reuse:`)."""

    trial_id: str
    deployment: str


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
    | DeploymentReused
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


def sink_name(sink: Sink) -> str:
    """What a sink is called in messages: its `name` attribute, or its class name."""
    return str(getattr(sink, "name", type(sink).__name__))


class IsolatedSink:
    """A sink that never raises. The first error of the sink inside (a closed pipe, a value it
    cannot write) is reported on stderr in one line naming the sink; from then on the sink gets no
    more events, as it may be half-way through one. Only `Exception`s are caught: Ctrl-C and
    cancellation go through."""

    def __init__(self, sink: Sink, stderr: TextIO | None = None) -> None:
        self.sink = sink
        self.error: Exception | None = None
        self._stderr = stderr

    @property
    def name(self) -> str:
        return sink_name(self.sink)

    def emit(self, event: Event) -> None:
        if self.error is not None:
            return
        try:
            self.sink.emit(event)
        except Exception as exc:
            self.error = exc
            self._report(exc)

    def _report(self, exc: Exception) -> None:
        stream = self._stderr or sys.stderr
        line = (
            f"seel: the {self.name} failed and is switched off, the sweep goes on: "
            f"{type(exc).__name__}: {exc}"
        )
        try:
            stream.write(line + "\n")
            stream.flush()
        except Exception:  # stderr itself is gone: nobody is left to tell
            pass


def isolated(sink: Sink, stderr: TextIO | None = None) -> Sink:
    """`sink` behind a guard that reports its first error once and never raises (see IsolatedSink);
    a sink that is already guarded (an IsolatedSink, a FanOut) is returned as it is."""
    if isinstance(sink, IsolatedSink | FanOut):
        return sink
    return IsolatedSink(sink, stderr)


class FanOut:
    """Sends each event to several sinks, each isolated: one that fails does not stop the others."""

    def __init__(self, *sinks: Sink, stderr: TextIO | None = None) -> None:
        self.sinks = tuple(isolated(sink, stderr) for sink in sinks)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)
