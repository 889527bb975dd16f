"""Fail fast on a broken set-up: a sweep whose first trials all fail the same way early stops.

The rule: when the first `FIRST` trials to finish all ended with the same non-ok status, in the
same early phase (init, start or register: before any hyperparameter of training could matter),
with the same reason (numbers aside, so that ports and pids do not make reasons differ), the
set-up is broken (a missing file, a wrong Python, a bad config) and every other trial would end
the same way. The sweep stops with one line saying so. One trial that ends otherwise settles it:
the sweep then runs to its end, whatever follows. `--keep-going` turns the rule off.
"""

from __future__ import annotations

import re

from seel.outcome import Outcome, Status

FIRST = 3
EARLY_PHASES = frozenset({"init", "start", "register"})
_NUMBER = re.compile(r"\d+")
_NOT_FAILURES = frozenset({"ok", "interrupted", "pruned"})


def _signature(outcome: Outcome) -> tuple[str, str | None, str] | None:
    """What makes two failures the same; None for an outcome that is not an early failure."""
    if str(outcome.status) in _NOT_FAILURES:
        return None
    if outcome.phase not in EARLY_PHASES:
        return None
    return str(outcome.status), outcome.phase, _NUMBER.sub("#", outcome.reason)


class FailFast:
    """Told each final outcome in order; `verdict` is set once the sweep should stop."""

    def __init__(self, first: int = FIRST) -> None:
        self.first = first
        self.verdict: str | None = None
        self._seen: list[Outcome] = []
        self._settled = False

    def tell(self, outcome: Outcome) -> str | None:
        """Take a finished trial; returns the verdict the moment the sweep should stop."""
        if self._settled or outcome.status is Status.INTERRUPTED:
            return None
        signature = _signature(outcome)
        if signature is None or (self._seen and signature != _signature(self._seen[0])):
            self._settled = True  # the set-up can run a trial, or trials fail differently
            return None
        self._seen.append(outcome)
        if len(self._seen) < self.first:
            return None
        self._settled = True
        self.verdict = (
            f"stopped: the first {len(self._seen)} trials all ended {outcome.status} in "
            f"{outcome.phase} with the same reason, so the set-up is broken: {outcome.reason} "
            "(fix it and run again to resume, or pass --keep-going)"
        )
        return self.verdict
