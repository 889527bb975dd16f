"""The live dashboard: a rich Live view redrawn at a steady rate from the event stream.

Events only update plain state; an asyncio task redraws four times a second, so drawing never
runs while a trial is handled and no thread touches the state. Parameters and reasons are shown
as `Text`, never parsed as markup.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from seel.events import (
    DeploymentReused,
    Event,
    PartyState,
    PhaseReached,
    RoundFinished,
    SearchProgress,
    SweepFinished,
    SweepStarted,
    SweepStopping,
    TrialFinished,
    TrialStarted,
)
from seel.outcome import Status
from seel.render.best import BestTracker
from seel.render.text import params_text, short_name, value_text
from seel.results import lower_is_better

REFRESH_S = 0.25
_MAX_RUNNING_ROWS = 12
_MAX_AXIS = 12
_BINS = 8  # columns of a searched axis, once it has more values than that
_STATUS_STYLE = {
    "ok": "green",
    "timeout": "yellow",
    "crashed": "red",
    "failed": "magenta",
    "pruned": "blue",
    "interrupted": "dim",
}


@dataclass
class _Running:
    params: dict[str, Any]
    started: float
    attempt: int
    phase: str = "init"
    process: str = "aggregator"
    round: int = 0
    rounds: int | None = None
    accuracy: float | None = None
    parties: dict[int, str] = field(default_factory=dict)
    deployment: str | None = None  # the trial whose deployment it reuses


@dataclass
class _State:
    sweep: str = ""
    engine: str = ""
    run_dir: str = ""
    total: int = 0
    pending: int = 0
    parallel: int = 1
    auto: bool = False
    parameters: dict[str, list[Any]] = field(default_factory=dict)
    budget: bool = False
    running: dict[str, _Running] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    finished: int = 0
    started: float = field(default_factory=time.monotonic)
    cells: dict[tuple[Any, Any], list[float]] = field(default_factory=dict)
    notice: str = ""
    done: bool = False
    search: SearchProgress | None = None  # an adaptive search: its budget and best so far


class LiveSink:
    """The dashboard. Use as a context manager around the sweep, with `ticker()` running."""

    name = "live dashboard"

    def __init__(self, console: Console, metric: str = "acc") -> None:
        self.console = console
        self.metric = metric
        self.state = _State()
        self.best = BestTracker(metric)
        self.finished: SweepFinished | None = None
        self.live = Live(
            console=console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> LiveSink:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self.render(), refresh=True)
        self.live.stop()

    async def ticker(self) -> None:
        """Redraw at a steady rate until cancelled."""
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                self.live.update(self.render(), refresh=True)
                await asyncio.sleep(REFRESH_S)

    # -- events ---------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        s = self.state
        if isinstance(event, SweepStarted):
            s.sweep, s.engine, s.run_dir = event.sweep, event.engine, event.run_dir
            s.total, s.pending, s.parallel = event.trial_count, event.pending, event.parallel
            s.auto = event.auto
            s.parameters, s.budget = event.parameters, event.budget
            s.started = time.monotonic()
        elif isinstance(event, TrialStarted):
            s.running[event.trial_id] = _Running(event.params, time.monotonic(), event.attempt)
        elif isinstance(event, PhaseReached):
            run = s.running.get(event.trial_id)
            if run is not None:
                run.phase, run.process = event.phase, event.process
                if event.phase == "train":
                    run.parties = dict.fromkeys(run.parties, "training")
        elif isinstance(event, DeploymentReused):
            run = s.running.get(event.trial_id)
            if run is not None:
                run.deployment = event.deployment
        elif isinstance(event, PartyState):
            run = s.running.get(event.trial_id)
            if run is not None:
                run.parties[event.party] = event.state
        elif isinstance(event, RoundFinished):
            run = s.running.get(event.trial_id)
            if run is not None:
                run.round, run.rounds, run.accuracy = event.round, event.rounds, event.accuracy
        elif isinstance(event, TrialFinished):
            s.running.pop(event.outcome.trial_id, None)
            if event.will_retry:
                return
            o = event.outcome
            s.finished += 1
            s.counts[str(o.status)] = s.counts.get(str(o.status), 0) + 1
            self.best.add(o)
            names = list(s.parameters)
            values = [p.metrics[self.metric] for p in o.parties if self.metric in p.metrics]
            if (
                o.status is Status.OK
                and len(names) >= 2
                and values
                and all(map(math.isfinite, values))
            ):
                key = (o.params.get(names[0]), o.params.get(names[1]))
                s.cells.setdefault(key, []).append(sum(values) / len(values))
        elif isinstance(event, SearchProgress):
            s.search = event
        elif isinstance(event, SweepStopping):
            s.notice = f"{event.signal}: stopping every trial (STOP, then SIGTERM, then SIGKILL)..."
            self.live.update(self.render(), refresh=True)  # now, not at the next tick
        elif isinstance(event, SweepFinished):
            self.finished = event
            s.done = True
            if event.interrupted:
                s.notice = "\n".join(
                    filter(
                        None, [s.notice, "interrupted: every trial stopped, finished results kept"]
                    )
                )

    # -- drawing --------------------------------------------------------------------------

    def render(self) -> Group:
        s = self.state
        parts: list[Any] = [self._header(), self._progress()]
        if s.running:
            parts.append(self._running_table())
        parts.append(self._best_line())
        heat = self._heatmap()
        if heat is not None:
            parts.append(heat)
        if s.notice:
            parts.append(Text(s.notice, style="bold yellow"))
        return Group(*parts)

    def _header(self) -> Text:
        s = self.state
        return Text.assemble(
            ("seel ", "bold"),
            (s.sweep, "bold cyan"),
            f"  engine {s.engine}  ·  {s.total} trials{' (budget)' if s.budget else ''}"
            f"  ·  {'up to ' if s.auto else ''}{s.parallel} at a time  ·  ",
            (s.run_dir, "dim"),
        )

    def _progress(self) -> Table:
        s = self.state
        elapsed = time.monotonic() - s.started
        rate = s.finished / elapsed * 60 if elapsed > 0 and s.finished else 0.0
        left = max(0, s.pending - s.finished)
        eta = f"{left / rate:.1f} min" if rate > 0 else "—"
        grid = Table.grid(padding=(0, 2))
        grid.add_row(
            ProgressBar(total=max(s.pending, 1), completed=s.finished, width=40),
            Text(f"{s.finished}/{s.pending}"),
            Text(f"{rate:.1f} trials/min"),
            Text(f"ETA {eta}"),
            Text(f"elapsed {elapsed:.0f} s"),
        )
        counts = Text()
        for status in Status:
            style = _STATUS_STYLE.get(status, "")
            counts.append(f"{status} {s.counts.get(status, 0)}   ", style=style)
        outer = Table.grid()
        outer.add_row(grid)
        outer.add_row(counts)
        return outer

    def _running_table(self) -> Table:
        table = Table(title="running", title_justify="left", expand=False, pad_edge=False)
        for column in ("trial", "parameters", "phase", "round", "acc", "elapsed", "parties"):
            table.add_column(column)
        now = time.monotonic()
        for trial_id, run in list(self.state.running.items())[:_MAX_RUNNING_ROWS]:
            params = params_text(run.params)
            rounds = (
                f"{run.round} of {run.rounds}"
                if run.rounds
                else (str(run.round) if run.round else "")
            )
            table.add_row(
                Text(trial_id + (f" (try {run.attempt})" if run.attempt > 1 else "")),
                Text(params),
                Text(
                    f"{run.phase} ({run.process})"
                    + (f", reused {run.deployment}'s deployment" if run.deployment else "")
                ),
                Text(rounds),
                Text("" if run.accuracy is None else f"{run.accuracy:.4f}"),
                Text(f"{now - run.started:.1f} s"),
                Text(" ".join(f"{i}:{state}" for i, state in sorted(run.parties.items()))),
            )
        return table

    def _best_line(self) -> Text:
        search = self.state.search
        if search is not None:
            return _search_best(search)
        best = self.best.as_json()
        if best is None:
            return Text(f"best {self.metric}: —", style="dim")
        params = params_text(best["params"])
        return Text.assemble(
            (f"best {self.metric} ", "bold"),
            (f"{best['value']:.4f}", "bold green"),
            f"  {best['trial']}  {params}",
        )

    def _heatmap(self) -> Group | None:
        s = self.state
        names = list(s.parameters)
        if len(names) < 2 or not s.cells:
            return None
        if s.budget:  # a search samples its values: the axes are the values seen so far, binned
            xs, x_of = bin_axis({x for x, _ in s.cells})
            ys, y_of = bin_axis({y for _, y in s.cells})
        else:
            xs, x_of = _listed_axis(s.parameters[names[0]])
            ys, y_of = _listed_axis(s.parameters[names[1]])
        pooled: dict[tuple[int, int], list[float]] = {}
        for (x, y), values in s.cells.items():
            column, row = x_of(x), y_of(y)
            if column is not None and row is not None:
                pooled.setdefault((column, row), []).extend(values)
        if not pooled:
            return None
        means = {k: sum(v) / len(v) for k, v in pooled.items()}
        low, high = min(means.values()), max(means.values())
        table = Table(show_lines=False, pad_edge=False)
        table.add_column(short_name(names[1]), justify="right")
        for x in xs:
            table.add_column(x, justify="center")
        for j, y in enumerate(ys):
            cells = [Text(y)]
            for i in range(len(xs)):
                value = means.get((i, j))
                if value is None:
                    cells.append(Text("·", style="dim"))
                    continue
                share = 0.5 if high == low else (value - low) / (high - low)
                if lower_is_better(self.metric):
                    share = 1 - share
                cells.append(Text(f"{value:.3f}", style=f"black on {_colour(share)}"))
            table.add_row(*cells)
        title = Text(
            f"{self.metric} by {short_name(names[1])} (rows) and {short_name(names[0])} (columns), "
            "mean over finished trials",
            style="italic",
        )
        return Group(title, table)


Axis = tuple[list[str], Callable[[Any], int | None]]  # column labels, and a value's column


def _listed_axis(values: list[Any]) -> Axis:
    shown = values[:_MAX_AXIS]
    where = {_key(v): i for i, v in enumerate(shown)}
    return [value_text(v) for v in shown], lambda v: where.get(_key(v))


def bin_axis(seen: set[Any], bins: int = _BINS) -> Axis:
    """The axis of values a search sampled: each value its own column while there are few, else
    `bins` ranges of equal width (of equal ratio when the values span decades, as learning rates
    do), labelled `low-high`."""
    ordered = sorted(seen, key=_order)
    numbers = [v for v in ordered if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(ordered) <= bins or len(numbers) < len(ordered):
        return _listed_axis(ordered)
    low, high = float(numbers[0]), float(numbers[-1])
    log = low > 0 and high / low >= 20
    ends = (math.log(low), math.log(high)) if log else (low, high)
    width = (ends[1] - ends[0]) / bins
    edges = [ends[0] + width * i for i in range(bins + 1)]
    if log:
        edges = [math.exp(e) for e in edges]
    edges[0], edges[-1] = low, high

    def column(value: Any) -> int | None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        x = math.log(value) if log and value > 0 else float(value)
        return min(bins - 1, max(0, int((x - ends[0]) / width))) if width > 0 else 0

    labels = [f"{edges[i]:.2g}-{edges[i + 1]:.2g}" for i in range(bins)]
    return labels, column


def _key(value: Any) -> Any:
    """A value as a dict key (lists, from YAML, are not hashable)."""
    return repr(value) if isinstance(value, list | dict) else value


def _order(value: Any) -> tuple[int, Any]:
    """Numbers in order, then everything else by its text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def _search_best(search: SearchProgress) -> Text:
    """The search's best trial (or its Pareto front) and its configuration."""
    head = f"search {search.finished}/{search.budget} finished, {search.pruned} pruned  ·  "
    if not search.best:
        return Text(head + f"best {', '.join(search.objectives)}: —", style="dim")
    if len(search.objectives) > 1:
        ids = " ".join(str(b["trial_id"]) for b in search.best[:8])
        return Text.assemble(head, ("Pareto front ", "bold"), f"{len(search.best)} trials: {ids}")
    best = search.best[0]
    params = params_text(best["params"])
    return Text.assemble(
        head,
        (f"best {search.objectives[0]} ", "bold"),
        (f"{best['values'][0]:.4f}", "bold green"),
        f"  {best['trial_id']}  {params}",
    )


def _colour(share: float) -> str:
    """From red (worst) through yellow to green (best)."""
    share = min(1.0, max(0.0, share))
    red = int(255 * min(1.0, 2 * (1 - share)))
    green = int(255 * min(1.0, 2 * share))
    return f"rgb({red},{green},64)"
