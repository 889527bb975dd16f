"""The best configuration seen so far for one metric (mean over a trial's parties).

A trial whose mean is not finite (a party printed `nan` or `inf`) is never the best.
"""

from __future__ import annotations

import math
from typing import Any

from seel.outcome import Outcome, Status
from seel.results import lower_is_better


class BestTracker:
    """Keeps the best ok trial by the mean of `metric` over its parties."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.value: float | None = None
        self.trial_id: str | None = None
        self.params: dict[str, Any] = {}

    def add(self, outcome: Outcome) -> None:
        if outcome.status is not Status.OK:
            return
        values = [p.metrics[self.metric] for p in outcome.parties if self.metric in p.metrics]
        if not values:
            return
        value = sum(values) / len(values)
        if not math.isfinite(value):
            return
        better = self.value is None or (
            value < self.value if lower_is_better(self.metric) else value > self.value
        )
        if better:
            self.value, self.trial_id, self.params = value, outcome.trial_id, dict(outcome.params)

    def as_json(self) -> dict[str, Any] | None:
        if self.value is None:
            return None
        return {
            "metric": self.metric,
            "value": self.value,
            "trial": self.trial_id,
            "params": self.params,
        }
