"""Findings from a run's results: which parameters mattered, what timed out, what was best.

The unit of observation is a trial: a metric is averaged over the trial's parties first, so the
parties of one trial are not counted as independent samples. For each parameter and metric:
the mean and 95% confidence interval at each value (over repeats and the other parameters), the
effect size (eta squared: the share of the metric's variance explained by the parameter's value),
and a permutation test of whether that effect is distinguishable from noise.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from seel.errors import RunDirError
from seel.render.best import lower_is_better
from seel.store import RESULTS_PARQUET

TRIAL_COLUMNS = {
    "trial_id",
    "index",
    "repeat",
    "seed",
    "status",
    "phase",
    "reason",
    "attempts",
    "elapsed_s",
    "rounds_completed",
    "final_global_acc",
    "aggregator_exit",
    "party",
    "party_exit",
}
STATUSES = ("ok", "timeout", "crashed", "failed", "interrupted")
_ALPHA = 0.05
_PERMUTATIONS = 999
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t_critical(df: int) -> float:
    """Two-sided 95% critical value of Student's t (a table to 30, Cornish-Fisher beyond)."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Level:
    """A metric at one value of a parameter."""

    value: Any
    n: int
    mean: float
    ci95: float  # half-width; nan with fewer than 2 trials


@dataclass(frozen=True)
class Effect:
    """How much one parameter moves one metric."""

    parameter: str
    metric: str
    levels: list[Level]
    spread: float  # largest minus smallest mean
    eta_squared: float
    p_value: float
    distinguishable: bool


@dataclass(frozen=True)
class Rates:
    """Trial outcomes at one value of a parameter."""

    parameter: str
    value: Any
    trials: int
    counts: dict[str, int]

    def rate(self, status: str) -> float:
        return self.counts.get(status, 0) / self.trials if self.trials else 0.0


@dataclass
class Report:
    """Everything `seel report` shows."""

    run_dir: str
    sweep: str
    parameters: list[str]
    metrics: list[str]
    trials: int
    status_counts: dict[str, int]
    by_phase: dict[str, dict[str, int]]
    effects: list[Effect] = field(default_factory=list)
    rates: list[Rates] = field(default_factory=list)
    best: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for rates in out["rates"]:
            rates["rates"] = {
                s: rates["counts"].get(s, 0) / rates["trials"] for s in STATUSES if rates["trials"]
            }
        doc: dict[str, Any] = _finite(out)
        return doc


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def load_results(run_dir: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The results table and the plan of a run directory."""
    plan_path, results_path = run_dir / "plan.json", run_dir / RESULTS_PARQUET
    if not plan_path.exists() or not results_path.exists():
        raise RunDirError(
            f"{run_dir}: not a seel run directory with results (plan.json, {RESULTS_PARQUET})"
        )
    return pl.read_parquet(results_path), json.loads(plan_path.read_text())


def metric_columns(df: pl.DataFrame, parameters: list[str]) -> list[str]:
    """The numeric columns that are metrics a party printed."""
    return [
        c
        for c in df.columns
        if c not in TRIAL_COLUMNS
        and c not in parameters
        and not c.startswith("duration.")
        and df.schema[c].is_numeric()
    ]


def _eta_squared(values: npt.NDArray[np.float64], groups: npt.NDArray[np.int64], k: int) -> float:
    grand = values.mean()
    total = float(np.sum((values - grand) ** 2))
    if total <= 1e-24 * len(values):
        return 0.0
    counts = np.bincount(groups, minlength=k)
    sums = np.bincount(groups, weights=values, minlength=k)
    present = counts > 0
    means = sums[present] / counts[present]
    between = float(np.sum(counts[present] * (means - grand) ** 2))
    return min(1.0, max(0.0, between / total))


def _permutation_p(
    values: npt.NDArray[np.float64],
    groups: npt.NDArray[np.int64],
    strata: npt.NDArray[np.int64],
    k: int,
    observed: float,
) -> float:
    """Share of label shuffles within strata whose effect is at least the observed one."""
    if observed <= 0 or len(values) < 3:
        return 1.0
    rng = np.random.default_rng(0)
    # Positions grouped by stratum; a shuffle within strata is a sort by stratum + random fraction.
    by_stratum = np.argsort(strata, kind="stable")
    shuffled = np.empty_like(groups)
    hits = 0
    for _ in range(_PERMUTATIONS):
        shuffled[by_stratum] = groups[np.argsort(strata + rng.random(len(groups)))]
        hits += _eta_squared(values, shuffled, k) >= observed - 1e-12
    return (1 + hits) / (1 + _PERMUTATIONS)


def _effect(
    trials: pl.DataFrame, parameter: str, metric: str, others: list[str] | None = None
) -> Effect | None:
    """Levels are marginal means (over repeats and the other parameters). The effect size and its
    test compare values within matched settings of the other parameters (a randomized-block
    design): the metric is centred on the mean of its stratum, and labels are shuffled only within
    strata, so what another parameter does is not counted as noise.
    """
    others = [o for o in (others or []) if o != parameter and o in trials.columns]
    data = trials.select(parameter, metric, *others).drop_nulls([parameter, metric])
    if data.height == 0:
        return None
    levels_values = sorted(data[parameter].unique().to_list(), key=_sort_key)
    index = {v: i for i, v in enumerate(levels_values)}
    values = np.round(
        data[metric].cast(pl.Float64).to_numpy(), 12
    )  # noise below this is not an effect
    groups = np.array([index[v] for v in data[parameter].to_list()], dtype=np.int64)
    if others:
        keys = data.select(others).with_columns(pl.all().cast(pl.Utf8)).rows()
        ids: dict[tuple[Any, ...], int] = {}
        strata = np.array([ids.setdefault(key, len(ids)) for key in keys], dtype=np.int64)
    else:
        strata = np.zeros(len(values), dtype=np.int64)
    sums = np.bincount(strata, weights=values)
    centred = values - (sums / np.bincount(strata))[strata]
    levels = []
    for i, value in enumerate(levels_values):
        group = values[groups == i]
        sd = float(np.std(group, ddof=1)) if len(group) > 1 else math.nan
        ci = t_critical(len(group) - 1) * sd / math.sqrt(len(group)) if len(group) > 1 else math.nan
        levels.append(Level(value, len(group), float(group.mean()), ci))
    eta = _eta_squared(centred, groups, len(levels_values))
    p = (
        _permutation_p(centred, groups, strata, len(levels_values), eta)
        if len(levels_values) > 1
        else 1.0
    )
    means = [lv.mean for lv in levels]
    return Effect(parameter, metric, levels, max(means) - min(means), eta, p, p < _ALPHA)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def build_report(run_dir: Path, only_metric: str | None = None) -> Report:
    """Analyse a run directory's results."""
    df, plan = load_results(run_dir)
    parameters = [p for p in plan.get("parameters", {}) if p in df.columns]
    metrics = metric_columns(df, parameters)
    if only_metric is not None:
        if only_metric not in metrics:
            raise RunDirError(
                f"{run_dir}: no metric {only_metric!r} (have: {', '.join(metrics) or 'none'})"
            )
        metrics = [only_metric]
    per_trial = df.group_by("trial_id", maintain_order=True).agg(
        *(pl.col(p).first() for p in parameters),
        pl.col("status").first(),
        pl.col("phase").first(),
        *(pl.col(m).mean() for m in metrics),
    )
    ok = per_trial.filter(pl.col("status") == "ok")
    status_counts = {s: int(n) for s, n in per_trial.group_by("status").len().iter_rows()}
    by_phase: dict[str, dict[str, int]] = {}
    for status, phase, n in (
        per_trial.filter(pl.col("status") != "ok").group_by("status", "phase").len().iter_rows()
    ):
        by_phase.setdefault(str(phase), {})[str(status)] = int(n)
    report = Report(
        str(run_dir),
        str(plan.get("name", "")),
        parameters,
        metrics,
        per_trial.height,
        status_counts,
        by_phase,
    )
    for parameter in parameters:
        effects = [e for m in metrics if (e := _effect(ok, parameter, m, parameters)) is not None]
        report.effects += effects
        n_values = per_trial[parameter].n_unique()
        if effects and n_values > 1 and not any(e.distinguishable for e in effects):
            moved = (
                "no metric moved at all"
                if all(e.spread == 0 for e in effects)
                else "no metric moved beyond noise"
            )
            report.flags.append(
                f"{parameter}: {n_values} values, {moved} — does the engine read this key?"
            )
        for value, group in sorted(
            per_trial.group_by(parameter), key=lambda kv: _sort_key(kv[0][0])
        ):
            counts = {str(s): int(n) for s, n in group.group_by("status").len().iter_rows()}
            report.rates.append(Rates(parameter, value[0], group.height, counts))
    report.best = _best(df.filter(pl.col("status") == "ok"), parameters, metrics)
    return report


def _best(
    ok: pl.DataFrame, parameters: list[str], metrics: list[str], top: int = 3
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per metric and party, the best configurations (mean over repeats)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    if ok.height == 0:
        return out
    keys = [*parameters, "party"]
    for metric in metrics:
        table = (
            ok.group_by(keys)
            .agg(pl.col(metric).mean().alias("mean"), pl.len().alias("n"))
            .drop_nulls("mean")
        )
        table = table.sort(
            ["mean", *parameters],
            descending=[not lower_is_better(metric)] + [False] * len(parameters),
        )
        out[metric] = {}
        for party in sorted(table["party"].unique().drop_nulls().to_list()):
            rows = table.filter(pl.col("party") == party).head(top)
            out[metric][str(party)] = [
                {"params": {p: row[p] for p in parameters}, "mean": row["mean"], "n": row["n"]}
                for row in rows.iter_rows(named=True)
            ]
    return out
