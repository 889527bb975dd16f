"""The grid: every combination of the parameters' values, times repeats, in a fixed order.

Trial `index` is a position in the mixed-radix expansion (first parameter slowest, repeats
fastest), so any trial can be decoded directly and a resume skips what is done by id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from seel.outcome import Outcome, Status
from seel.space import TrialSpec, trial_id
from seel.sweep import SweepSpec


def _radices(spec: SweepSpec) -> list[int]:
    return [len(p.values) for p in spec.parameters] + [spec.repeats]


def _trial(spec: SweepSpec, index: int, digits: Sequence[int]) -> TrialSpec:
    params = {p.name: p.values[d] for p, d in zip(spec.parameters, digits, strict=False)}
    repeat = digits[-1]
    return TrialSpec(
        trial_id=trial_id(index), index=index, params=params, repeat=repeat, seed=spec.seed + repeat
    )


def _digits(spec: SweepSpec, index: int) -> list[int]:
    total = spec.trial_count()
    if not 0 <= index < total:
        raise IndexError(f"trial index {index} is out of range: the sweep has {total} trials")
    digits: list[int] = []
    rest = index
    for radix in reversed(_radices(spec)):
        rest, digit = divmod(rest, radix)
        digits.append(digit)
    digits.reverse()
    return digits


def trial_at(spec: SweepSpec, index: int) -> TrialSpec:
    """The trial at a position of the expansion, decoded directly."""
    return _trial(spec, index, _digits(spec, index))


def iter_trials(spec: SweepSpec, start: int = 0) -> Iterator[TrialSpec]:
    """Trials in order: first parameter slowest, repeats fastest, beginning at ``start``."""
    total = spec.trial_count()
    if start < 0:
        raise ValueError(f"start must be >= 0, not {start}")
    if start >= total:
        return
    radices = _radices(spec)
    digits = _digits(spec, start)
    for index in range(start, total):
        yield _trial(spec, index, digits)
        for position in reversed(range(len(digits))):
            digits[position] += 1
            if digits[position] < radices[position]:
                break
            digits[position] = 0


class GridSource:
    """Every trial of the grid, in order, minus those already done (a TrialSource)."""

    def __init__(self, trials: Iterator[TrialSpec], total: int, done: set[str]) -> None:
        self.total = total
        self._trials = trials
        self._done = set(done)

    @classmethod
    def of(cls, spec: SweepSpec, done: set[str]) -> GridSource:
        """The whole grid of a sweep, minus `done`."""
        return cls(iter_trials(spec), spec.trial_count(), done)

    def next_trial(self) -> TrialSpec | None:
        for trial in self._trials:
            if trial.trial_id not in self._done:
                return trial
        return None

    def tell(self, outcome: Outcome) -> None:
        if outcome.status is not Status.INTERRUPTED:
            self._done.add(outcome.trial_id)

    def observe(self, trial_id: str, round: int, value: float | None) -> bool:
        """A grid never stops a trial early."""
        return False
