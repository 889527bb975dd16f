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
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from seel.events import (
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
from seel.render.best import BestTracker, lower_is_better
from seel.render.text import short_name, value_text

REFRESH_S = 0.25
_MAX_RUNNING_ROWS = 12
_MAX_AXIS = 12
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
            params = " ".join(f"{short_name(k)}={value_text(v)}" for k, v in run.params.items())
            rounds = (
                f"{run.round} of {run.rounds}"
                if run.rounds
                else (str(run.round) if run.round else "")
            )
            table.add_row(
                Text(trial_id + (f" (try {run.attempt})" if run.attempt > 1 else "")),
                Text(params),
                Text(f"{run.phase} ({run.process})"),
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
        params = " ".join(f"{short_name(k)}={value_text(v)}" for k, v in best["params"].items())
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
        if s.budget:  # a search samples its values: the axes are the values seen so far
            xs = sorted({x for x, _ in s.cells}, key=_order)[:_MAX_AXIS]
            ys = sorted({y for _, y in s.cells}, key=_order)[:_MAX_AXIS]
        else:
            xs, ys = s.parameters[names[0]][:_MAX_AXIS], s.parameters[names[1]][:_MAX_AXIS]
        means = {k: sum(v) / len(v) for k, v in s.cells.items()}
        low, high = min(means.values()), max(means.values())
        table = Table(show_lines=False, pad_edge=False)
        table.add_column(short_name(names[1]), justify="right")
        for x in xs:
            table.add_column(value_text(x), justify="center")
        for y in ys:
            cells = [Text(value_text(y))]
            for x in xs:
                value = means.get((x, y))
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
    params = " ".join(f"{short_name(k)}={value_text(v)}" for k, v in best["params"].items())
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
