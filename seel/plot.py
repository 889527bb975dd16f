"""Pictures of a run: metric heatmaps, marginal effects with confidence bands, a timeout map.

The heatmap is a readable version of the SEEL paper's Figure 1: the metric over the first two
swept parameters, one panel per value of the third parameter and per party, with a colour bar and
the values written in the cells of small grids.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from seel.analysis import _effect, _sort_key, load_results, metric_columns
from seel.errors import RunDirError
from seel.outcome import Status
from seel.render.text import short_name, value_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_UNITS = {"max_timeout": "s", "delay_s": "s", "jitter_s": "s", "timeout": "s"}
_ANNOTATE_MAX_CELLS = 120


def label(parameter: str) -> str:
    """An axis label: the key's last part, with its unit where known."""
    short = short_name(parameter)
    unit = next((u for key, u in _UNITS.items() if short.endswith(key)), None)
    return f"{short} ({unit})" if unit else short


def _grid(
    frame: pl.DataFrame, x: str, y: str, column: str, xs: list[Any], ys: list[Any]
) -> np.ndarray:
    means = frame.group_by(x, y).agg(pl.col(column).mean())
    grid = np.full((len(ys), len(xs)), np.nan)
    xi, yi = {v: i for i, v in enumerate(xs)}, {v: i for i, v in enumerate(ys)}
    for xv, yv, value in means.iter_rows():
        if value is not None and xv in xi and yv in yi:
            grid[yi[yv], xi[xv]] = value
    return grid


def _heat_panels(
    frame: pl.DataFrame,
    params: list[str],
    column: str,
    rows: list[Any],
    row_key: str | None,
    title: str,
    cbar_label: str,
    cmap: str,
    out: Path,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = params[0], params[1]
    facet = params[2] if len(params) > 2 else None
    xs = sorted(frame[x].unique().drop_nulls().to_list(), key=_sort_key)
    ys = sorted(frame[y].unique().drop_nulls().to_list(), key=_sort_key)
    cols = sorted(frame[facet].unique().drop_nulls().to_list(), key=_sort_key) if facet else [None]
    if vmin is None or vmax is None:
        finite = frame[column].drop_nulls()
        vmin = float(finite.min()) if finite.len() else 0.0  # type: ignore[arg-type]
        vmax = float(finite.max()) if finite.len() else 1.0  # type: ignore[arg-type]
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    fig, axes = plt.subplots(
        len(rows),
        len(cols),
        figsize=(1.2 + 0.55 * len(xs) * len(cols) + 1.5, 1.0 + 0.45 * len(ys) * len(rows) + 0.8),
        squeeze=False,
        constrained_layout=True,
    )
    image = None
    for r, row_value in enumerate(rows):
        part = frame if row_key is None else frame.filter(pl.col(row_key) == row_value)
        for c, col_value in enumerate(cols):
            ax = axes[r][c]
            cell = part if facet is None else part.filter(pl.col(facet) == col_value)
            grid = _grid(cell, x, y, column, xs, ys)
            image = ax.imshow(grid, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_xticks(
                range(len(xs)), [value_text(v) for v in xs], rotation=45 if len(xs) > 6 else 0
            )
            ax.set_yticks(range(len(ys)), [value_text(v) for v in ys])
            ax.set_xlabel(label(x))
            ax.set_ylabel(label(y))
            heading = []
            if row_key is not None:
                heading.append(f"party {row_value}")
            if facet is not None:
                heading.append(f"{label(facet)} = {value_text(col_value)}")
            ax.set_title(", ".join(heading), fontsize=9)
            if grid.size <= _ANNOTATE_MAX_CELLS:
                for (i, j), value in np.ndenumerate(grid):
                    if not math.isnan(value):
                        dark = (value - vmin) / (vmax - vmin) < 0.5
                        ax.text(
                            j,
                            i,
                            f"{value:.3g}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if dark else "black",
                        )
    if image is not None:
        fig.colorbar(image, ax=axes, label=cbar_label, shrink=0.9)
    fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def marginal_figure(frame: pl.DataFrame, params: list[str], metric: str) -> Figure:
    """Mean of the metric at each value of each parameter, per party, with a 95% band (finite
    values only). An integer parameter gets ticks at integers only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    parties = sorted(frame["party"].unique().drop_nulls().to_list())
    fig, axes = plt.subplots(
        1, len(params), figsize=(4.2 * len(params), 3.6), squeeze=False, constrained_layout=True
    )
    for ax, parameter in zip(axes[0], params, strict=True):
        for party in parties:
            effect = _effect(frame.filter(pl.col("party") == party), parameter, metric, params)
            if effect is None:
                continue
            levels = [lv for lv in effect.levels if lv.mean is not None]
            xs = [lv.value for lv in levels]
            numeric = all(isinstance(v, int | float) for v in xs)
            pos = xs if numeric else list(range(len(xs)))
            mean = np.array([lv.mean for lv in levels], dtype=float)
            ci = np.array([lv.ci95 or 0.0 for lv in levels], dtype=float)
            ax.plot(pos, mean, marker="o", label=f"party {party}")
            ax.fill_between(pos, mean - ci, mean + ci, alpha=0.2)
            if not numeric:
                ax.set_xticks(pos, [value_text(v) for v in xs])
            elif all(_is_int(v) for v in xs):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(label(parameter))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{metric}: mean and 95% confidence band per parameter (ok trials)")
    return fig


def marginal_plot(frame: pl.DataFrame, params: list[str], metric: str, out: Path) -> Path:
    """Write `marginal_figure` to `out`."""
    import matplotlib.pyplot as plt

    fig = marginal_figure(frame, params, metric)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_run(run_dir: Path, metric: str = "acc", out: Path | None = None) -> list[Path]:
    """Write the run's PNGs; returns their paths. `out` names the heatmap; the others sit beside it."""
    df, manifest = load_results(run_dir)
    params = [p for p in manifest.parameters if p in df.columns and df[p].n_unique() > 1]
    metrics = metric_columns(df, params)
    if metric not in metrics:
        raise RunDirError(f"{run_dir}: no metric {metric!r} (have: {', '.join(metrics) or 'none'})")
    if not params:
        raise RunDirError(f"{run_dir}: nothing to plot: no parameter takes more than one value")
    heat = out or run_dir / "plots" / f"{metric.replace(' ', '_')}-heatmap.png"
    stem = heat.with_suffix("")
    ok = df.filter(pl.col("status") == Status.OK)
    # nan and inf are left out of means and colour scales (the report counts them)
    ok_finite = ok.filter(pl.col(metric).cast(pl.Float64).is_finite())
    parties = sorted(df["party"].unique().drop_nulls().to_list())
    written = []
    if len(params) >= 2:
        written.append(
            _heat_panels(
                ok_finite,
                params,
                metric,
                parties,
                "party",
                f"{metric} by {label(params[0])} and {label(params[1])} (mean over repeats)",
                metric,
                "viridis_r" if "loss" in metric else "viridis",
                heat,
            )
        )
        trials = df.group_by("trial_id").agg(
            *(pl.col(p).first() for p in params), pl.col("status").first()
        )
        trials = trials.with_columns(
            (pl.col("status") != Status.OK).cast(pl.Float64).alias("not ok")
        )
        written.append(
            _heat_panels(
                trials,
                params,
                "not ok",
                [None],
                None,
                "share of trials that did not end ok (timeout, crashed or failed)",
                "share not ok",
                "Reds",
                Path(f"{stem}-timeouts.png"),
                0.0,
                1.0,
            )
        )
    written.append(marginal_plot(ok_finite, params, metric, Path(f"{stem}-marginal.png")))
    return written
