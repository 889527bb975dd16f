"""`seel report` on a terminal: rich tables of the findings."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from seel.analysis import Report
from seel.outcome import Status
from seel.render.text import cell_text, short_name

# Not ok, and not about the configuration (an interrupted trial is run again).
_FAILED = [s for s in Status if s not in (Status.OK, Status.INTERRUPTED)]
_NOT_OK = [s for s in Status if s is not Status.OK]


def _trials(n: int, nonfinite: int) -> str:
    return f"{n} (+{nonfinite} nan/inf)" if nonfinite else str(n)


def show_header(report: Report, console: Console) -> None:
    """The report's first line: the sweep, its trials by status, the run directory."""
    counts = "  ".join(
        f"{s} {report.status_counts.get(s, 0)}" for s in Status if report.status_counts.get(s)
    )
    console.print(
        Text.assemble(
            ("seel report ", "bold"),
            (report.sweep, "bold cyan"),
            f"  {report.trials} trials: {counts}  ·  ",
            (report.run_dir, "dim"),
        )
    )


def show_phases(report: Report, console: Console) -> None:
    """Trials that did not end ok, by the phase they ended in and their status."""
    if report.by_phase:
        phases = Table(title="Trials that did not end ok, by phase", title_justify="left")
        for column in ("phase", *_NOT_OK):
            phases.add_column(column, justify="right")
        for phase, by_status in sorted(report.by_phase.items()):
            phases.add_row(phase, *(str(by_status.get(s, 0)) for s in _NOT_OK))
        console.print(phases)


def show_report(report: Report, console: Console, metric: str) -> None:
    """Print the report's tables for one metric (effects summary covers every metric)."""
    show_header(report, console)
    for flag in report.flags:
        console.print(Text(f"! {flag}", style="bold yellow"))

    summary = Table(
        title=f"Effect of each parameter on {metric} (ok trials, averaged over parties)",
        title_justify="left",
    )
    summary.add_column("parameter", overflow="fold")
    for column in (
        "values",
        "spread of means",
        "eta²",
        "p",
        "beyond noise",
        "metrics beyond noise",
    ):
        summary.add_column(column, justify="right")
    for parameter in report.parameters:
        mine = [e for e in report.effects if e.parameter == parameter]
        chosen = next((e for e in mine if e.metric == metric), None)
        moved = f"{sum(e.distinguishable for e in mine)} of {len(mine)}"
        if chosen is None:
            summary.add_row(Text(parameter), "—", "—", "—", "—", "—", moved)
            continue
        verdict = Text("yes", style="green") if chosen.distinguishable else Text("no", style="dim")
        summary.add_row(
            Text(parameter),
            str(len(chosen.levels)),
            cell_text(chosen.spread),
            cell_text(chosen.eta_squared),
            cell_text(chosen.p_value),
            verdict,
            moved,
        )
    console.print(summary)
    console.print(
        Text(
            "eta²: share of the variance, within matched settings of the other parameters, explained "
            "by this one; p: permutation test (999 shuffles within those settings); beyond noise: p < 0.05",
            style="dim",
        )
    )

    for e in (e for e in report.effects if e.metric == metric):
        table = Table(title=f"{metric} by {e.parameter}", title_justify="left")
        for column in ("value", "trials", "mean", "95% CI"):
            table.add_column(column, justify="right")
        for level in e.levels:
            ci = "—" if level.ci95 is None else f"± {level.ci95:.4g}"
            table.add_row(
                Text(cell_text(level.value)),
                _trials(level.n, level.nonfinite),
                cell_text(level.mean),
                ci,
            )
        console.print(table)

    rates = Table(
        title=f"Share of trials by how they ended ({', '.join(_FAILED)}), by parameter value",
        title_justify="left",
    )
    for column in ("parameter", "value", "trials", *_FAILED):
        rates.add_column(column, justify="right")
    for r in report.rates:
        rates.add_row(
            Text(short_name(r.parameter)),
            Text(cell_text(r.value)),
            str(r.trials),
            *(f"{r.rate(s):.1%}" for s in _FAILED),
        )
    console.print(rates)

    show_phases(report, console)

    for party, rows in report.best.get(metric, {}).items():
        best = Table(title=f"Best configurations for {metric}, party {party}", title_justify="left")
        best.add_column("mean", justify="right")
        best.add_column("n", justify="right")
        best.add_column("parameters")
        for row in rows:
            params = " ".join(f"{short_name(k)}={cell_text(v)}" for k, v in row["params"].items())
            best.add_row(cell_text(row["mean"]), _trials(row["n"], row["nonfinite"]), Text(params))
        console.print(best)
