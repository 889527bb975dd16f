"""One plain line per finished trial, for logs and terminals without a dashboard."""

from __future__ import annotations

from typing import TextIO

from seel.events import Event, SearchProgress, SweepFinished, SweepStarted, TrialFinished
from seel.render.text import params_text


def _at_a_time(event: SweepStarted) -> str:
    if event.auto:
        return f"as many at a time as the machine holds (up to {event.parallel})"
    return f"{event.parallel} at a time"


class PlainSink:
    """Writes a header, a line per finished trial and a summary."""

    name = "plain output"

    def __init__(self, stream: TextIO, metric: str = "acc") -> None:
        self.stream = stream
        self.metric = metric
        self.total = 0
        self.finished = 0
        self.search: SearchProgress | None = None
        self.best_ids: tuple[str, ...] = ()

    def _print(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _search_best(self) -> None:
        """A search's best trial, when it is a new one."""
        search, self.search = self.search, None
        if search is None or not search.best:
            return
        ids = tuple(str(b["trial_id"]) for b in search.best)
        if ids == self.best_ids:
            return
        self.best_ids = ids
        if len(search.objectives) > 1:
            self._print(f"       Pareto front: {len(ids)} trials: {' '.join(ids[:8])}")
            return
        best = search.best[0]
        params = params_text(best["params"])
        self._print(f"       best {search.objectives[0]} {best['values'][0]:.4f} {ids[0]} {params}")

    def emit(self, event: Event) -> None:
        if isinstance(event, SweepStarted):
            self.total = event.pending
            resumed = (
                "" if event.pending == event.trial_count else f" ({event.pending} left to run)"
            )
            self._print(
                f"sweep {event.sweep}: {event.trial_count} trials{resumed} on engine {event.engine}, "
                f"{_at_a_time(event)} -> {event.run_dir}"
            )
        elif isinstance(event, TrialFinished):
            o = event.outcome
            if event.will_retry:
                self._print(f"       {o.trial_id} {o.status} ({o.reason}); retrying")
                return
            self.finished += 1
            params = params_text(o.params)
            where = f"@{o.phase}" if o.phase else ""
            values = [p.metrics.get(self.metric) for p in o.parties]
            shown = ",".join("-" if v is None else f"{v:.4f}" for v in values)
            width = len(str(self.total))
            reused = (
                f"  reused {o.deployment}'s deployment"
                if o.deployment is not None and o.deployment != o.trial_id
                else ""
            )
            self._print(
                f"[{self.finished:>{width}}/{self.total}] {o.trial_id} {o.status}{where:<10} "
                f"{o.elapsed_s:6.2f}s {params}  {self.metric}={shown}{reused}"
            )
            self._search_best()
        elif isinstance(event, SearchProgress):
            self.search = event  # shown after the trial's own line
        elif isinstance(event, SweepFinished):
            counts = (
                ", ".join(f"{n} {status}" for status, n in sorted(event.counts.items()))
                or "nothing run"
            )
            state = "interrupted" if event.interrupted else "finished"
            self._print(f"sweep {state} in {event.elapsed_s:.1f}s: {counts}")
            for path in event.results:
                self._print(f"  {path}")
