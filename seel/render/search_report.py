"""`seel report` on an adaptive search: the study's best trial (or Pareto front), fANOVA
parameter importances and the optimization history, after the run's status counts."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from seel.analysis import Report
from seel.render.report import show_header, show_phases
from seel.render.text import cell_text, short_name
from seel.search.analysis import SearchReport

_HISTORY_ROWS = 12


def show_search_report(report: Report, search: SearchReport, console: Console) -> None:
    """Print what an adaptive run can honestly show (no factorial effect tests)."""
    show_header(report, console)
    objectives = ", ".join(
        f"{name} ({direction})"
        for name, direction in zip(search.objectives, search.directions, strict=True)
    )
    console.print(
        Text(
            f"adaptive search: sampler {search.sampler or '?'}, {search.trials} study trials, "
            f"objective {objectives}"
        )
    )
    for note in [*search.notes, *report.flags]:
        console.print(Text(f"! {note}", style="bold yellow"))

    title = "Best trial" if len(search.objectives) == 1 else "Pareto front"
    best = Table(title=title, title_justify="left")
    best.add_column("trial")
    for name in search.objectives:
        best.add_column(name, justify="right")
    best.add_column("parameters")
    for row in search.best:
        params = " ".join(f"{short_name(k)}={cell_text(v)}" for k, v in row["params"].items())
        best.add_row(row["trial"], *(cell_text(v) for v in row["values"]), Text(params))
    console.print(best)

    for name, importances in search.importances.items():
        table = Table(
            title=f"Parameter importance for {name} (fANOVA, share of the variance)",
            title_justify="left",
        )
        table.add_column("parameter", overflow="fold")
        table.add_column("importance", justify="right")
        for parameter, value in importances.items():
            table.add_row(Text(parameter), f"{value:.3f}")
        console.print(table)
    console.print(
        Text(
            "A search does not sample a factorial design, so the grid's permutation test of each "
            "parameter does not apply; fANOVA fits a random forest to the finished trials.",
            style="dim",
        )
    )

    if len(search.objectives) == 1 and search.history:
        history = Table(title="Optimization history", title_justify="left")
        for column in ("trial", "state", "rounds", search.objectives[0], "best so far"):
            history.add_column(column, justify="right")
        rows = search.history
        step = max(1, len(rows) // _HISTORY_ROWS)
        shown = [*rows[::step][: _HISTORY_ROWS - 1], rows[-1]] if len(rows) > 1 else rows
        seen: set[str] = set()
        for row in shown:
            if row["trial"] in seen:
                continue
            seen.add(row["trial"])
            values = row["values"] or [None]
            history.add_row(
                row["trial"],
                row["state"],
                str(row["rounds"]),
                cell_text(values[0]),
                cell_text(row["best"]),
            )
        console.print(history)

    show_phases(report, console)
