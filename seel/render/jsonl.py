"""`--json`: one JSON object per line on stdout, each with `"schema": 1`; see event_schema.json.

Lines are strict JSON written by `seel.jsonio`: a metric that is not finite is the string `"NaN"`,
`"Infinity"` or `"-Infinity"`.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from seel import jsonio
from seel.events import (
    DeploymentReused,
    Event,
    PhaseReached,
    RoundFinished,
    SearchProgress,
    SweepFinished,
    SweepStarted,
    TrialFinished,
    TrialStarted,
)
from seel.render.best import BestTracker

SCHEMA = 1


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class JsonLinesSink:
    """Writes every event as a JSON line; flushes each so pipelines see it at once."""

    name = "--json output"

    def __init__(self, stream: TextIO, metric: str = "acc") -> None:
        self.stream = stream
        self.run_id = ""
        self.best = BestTracker(metric)

    def _write(self, event: str, body: dict[str, Any]) -> None:
        doc = {"schema": SCHEMA, "event": event, "time": _now(), "run_id": self.run_id, **body}
        self.stream.write(jsonio.dumps(doc) + "\n")
        self.stream.flush()

    def emit(self, event: Event) -> None:
        if isinstance(event, SweepStarted):
            self.run_id = event.run_id
            self._write(
                "sweep_started",
                {
                    "sweep": event.sweep,
                    "engine": event.engine,
                    "run_dir": event.run_dir,
                    "trial_count": event.trial_count,
                    "pending": event.pending,
                    "parallel": event.parallel,
                    "auto": event.auto,
                    "parameters": event.parameters,
                    "budget": event.budget,
                },
            )
        elif isinstance(event, TrialStarted):
            self._write(
                "trial_started",
                {
                    "trial": event.trial_id,
                    "params": event.params,
                    "repeat": event.repeat,
                    "attempt": event.attempt,
                },
            )
        elif isinstance(event, PhaseReached):
            self._write(
                "phase",
                {
                    "trial": event.trial_id,
                    "process": event.process,
                    "phase": event.phase,
                    "elapsed": round(event.elapsed_s, 6),
                },
            )
        elif isinstance(event, DeploymentReused):
            self._write("deployment", {"trial": event.trial_id, "deployment": event.deployment})
        elif isinstance(event, RoundFinished):
            self._write(
                "round",
                {
                    "trial": event.trial_id,
                    "round": event.round,
                    "rounds": event.rounds,
                    "accuracy": event.accuracy,
                },
            )
        elif isinstance(event, TrialFinished):
            o = event.outcome
            if not event.will_retry:
                self.best.add(o)
            self._write(
                "trial_finished",
                {
                    "trial": o.trial_id,
                    "params": o.params,
                    "repeat": o.repeat,
                    "seed": o.seed,
                    "status": str(o.status),
                    "phase": o.phase,
                    "reason": o.reason,
                    "attempts": o.attempts,
                    "will_retry": event.will_retry,
                    "elapsed": round(o.elapsed_s, 6),
                    "durations": {k: round(v, 6) for k, v in o.durations.items()},
                    "rounds_completed": o.rounds_completed,
                    "metrics": {str(p.index): p.metrics for p in o.parties},
                    **({"node": o.node} if o.node is not None else {}),
                    "deployment": o.deployment,
                },
            )
        elif isinstance(event, SearchProgress):
            self._write(
                "search_progress",
                {
                    "budget": event.budget,
                    "finished": event.finished,
                    "pruned": event.pruned,
                    "objectives": [
                        {"name": name, "direction": direction}
                        for name, direction in zip(event.objectives, event.directions, strict=True)
                    ],
                    "best": [
                        {"trial": b["trial_id"], "values": b["values"], "params": b["params"]}
                        for b in event.best
                    ],
                },
            )
        elif isinstance(event, SweepFinished):
            self._write(
                "sweep_finished",
                {
                    "counts": event.counts,
                    "best": self.best.as_json(),
                    "results": event.results,
                    "elapsed": round(event.elapsed_s, 6),
                    "interrupted": event.interrupted,
                },
            )
