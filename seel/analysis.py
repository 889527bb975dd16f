"""Findings from a run's results: which parameters mattered, what timed out, what was best.

The unit of observation is a trial: a metric is averaged over the trial's parties first, so the
parties of one trial are not counted as independent samples. For each parameter and metric:
the mean and 95% confidence interval at each value (over repeats and the other parameters), the
effect size (eta squared: the share of the metric's variance explained by the parameter's value),
and a permutation test of whether that effect is distinguishable from noise.

A value that is not finite (a party printed `nan` or `inf`) is a result, but averaging it would
make every mean it touches nan or infinite. So a trial's value is nan or infinite when one of its
parties' is; means, intervals, effects and the best configurations are over the finite values; and
what was left out is counted: per metric (`Report.nonfinite`, with a flag), per parameter value
(`Level.nonfinite`) and per best configuration (`nonfinite`). A spread within rounding error of
zero is zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from seel.errors import RunDirError
from seel.loadflag import timeouts_track_load
from seel.manifest import MANIFEST_FILE, RunManifest
from seel.outcome import Status
from seel.partycount import COUNT_PARAMETER
from seel.results import is_metric_column, lower_is_better
from seel.store import RESULTS_PARQUET

SCHEMA = 1  # of `report --json`

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
    """A metric at one value of a parameter, over the trials where it is finite."""

    value: Any
    n: int  # trials with a finite value
    mean: float | None  # None when no trial has a finite value
    ci95: float | None  # half-width; None with fewer than 2 trials
    nonfinite: int = 0  # trials whose value is nan or infinite, left out of n, mean and ci95


@dataclass(frozen=True)
class Effect:
    """How much one parameter moves one metric."""

    parameter: str
    metric: str
    levels: list[Level]
    spread: float | None  # largest minus smallest mean; None with fewer than 2 means to compare
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


@dataclass(frozen=True)
class NonFinite:
    """Ok trials whose value of a metric is not finite (a party printed nan or inf)."""

    trials: int  # ok trials with a value of this metric
    nan: int
    inf: int  # positive infinity
    neg_inf: int

    @property
    def count(self) -> int:
        return self.nan + self.inf + self.neg_inf


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
    nonfinite: dict[str, NonFinite] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict, with `"schema": 1`; write it with `seel.jsonio`."""
        out = asdict(self)
        for rates in out["rates"]:
            rates["rates"] = {
                str(s): rates["counts"].get(s, 0) / rates["trials"]
                for s in Status
                if rates["trials"]
            }
        for metric, counts in out["nonfinite"].items():
            counts["count"] = self.nonfinite[metric].count
        return {"schema": SCHEMA, **out}


def load_results(run_dir: Path) -> tuple[pl.DataFrame, RunManifest]:
    """The results table and the manifest of a run directory."""
    manifest, results_path = RunManifest.read(run_dir), run_dir / RESULTS_PARQUET
    if manifest is None or not results_path.exists():
        raise RunDirError(
            f"{run_dir}: not a seel run directory with results ({MANIFEST_FILE}, {RESULTS_PARQUET})"
        )
    return pl.read_parquet(results_path), manifest


def metric_columns(df: pl.DataFrame, parameters: list[str]) -> list[str]:
    """The numeric columns that are metrics a party printed."""
    return [c for c in df.columns if is_metric_column(c, parameters) and df.schema[c].is_numeric()]


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


def _level(value: Any, group: npt.NDArray[np.float64], nonfinite: int) -> Level:
    """Mean and 95% interval of the finite values at one parameter value."""
    n = len(group)
    if n == 0:
        return Level(value, 0, None, None, nonfinite)
    if group.min() == group.max():
        # Identical values: the mean is that value and there is no spread, exactly. Summing and
        # dividing would leave a rounding error (0.1 three times: a deviation of 1.4e-17).
        return Level(value, n, float(group[0]), 0.0 if n > 1 else None, nonfinite)
    sd = float(np.std(group, ddof=1))
    return Level(value, n, float(group.mean()), t_critical(n - 1) * sd / math.sqrt(n), nonfinite)


def _spread(levels: list[Level]) -> float | None:
    """Largest minus smallest mean; a difference no larger than the rounding error of computing
    the means (sums of up to n values: n machine epsilons, for each of the two) is zero."""
    means = [lv.mean for lv in levels if lv.mean is not None]
    if len(means) < 2:
        return None
    spread = max(means) - min(means)
    largest = max(lv.n for lv in levels)
    rounding = 2 * largest * np.finfo(np.float64).eps * max(abs(m) for m in means)
    return 0.0 if spread <= rounding else spread


def _effect(
    trials: pl.DataFrame, parameter: str, metric: str, others: list[str] | None = None
) -> Effect | None:
    """Levels are marginal means (over repeats and the other parameters). The effect size and its
    test compare values within matched settings of the other parameters (a randomized-block
    design): the metric is centred on the mean of its stratum, and labels are shuffled only within
    strata, so what another parameter does is not counted as noise.

    Only finite values are used; each level counts the trials left out for a nan or an infinity.
    None when no trial has a finite value.
    """
    others = [o for o in (others or []) if o != parameter and o in trials.columns]
    every = trials.select(parameter, metric, *others).drop_nulls([parameter, metric])
    every = every.with_columns(pl.col(metric).cast(pl.Float64))
    data = every.filter(pl.col(metric).is_finite())
    if data.height == 0:
        return None
    levels_values = sorted(every[parameter].unique().to_list(), key=_sort_key)
    left_out = dict(every.filter(~pl.col(metric).is_finite()).group_by(parameter).len().rows())
    index = {v: i for i, v in enumerate(levels_values)}
    values = np.round(data[metric].to_numpy(), 12)  # noise below this is not an effect
    groups = np.array([index[v] for v in data[parameter].to_list()], dtype=np.int64)
    if others:
        keys = data.select(others).with_columns(pl.all().cast(pl.Utf8)).rows()
        ids: dict[tuple[Any, ...], int] = {}
        strata = np.array([ids.setdefault(key, len(ids)) for key in keys], dtype=np.int64)
    else:
        strata = np.zeros(len(values), dtype=np.int64)
    sums = np.bincount(strata, weights=values)
    centred = values - (sums / np.bincount(strata))[strata]
    levels = [
        _level(value, values[groups == i], int(left_out.get(value, 0)))
        for i, value in enumerate(levels_values)
    ]
    eta = _eta_squared(centred, groups, len(levels_values))
    p = (
        _permutation_p(centred, groups, strata, len(levels_values), eta)
        if len(levels_values) > 1
        else 1.0
    )
    return Effect(parameter, metric, levels, _spread(levels), eta, p, p < _ALPHA)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def _nonfinite(ok: pl.DataFrame, metric: str) -> NonFinite:
    column = ok[metric].drop_nulls().cast(pl.Float64)
    return NonFinite(
        trials=column.len(),
        nan=int(column.is_nan().sum()),
        inf=int((column == math.inf).sum()),
        neg_inf=int((column == -math.inf).sum()),
    )


def build_report(run_dir: Path, only_metric: str | None = None, factorial: bool = True) -> Report:
    """Analyse a run directory's results. `factorial=False` (an adaptive search, whose trials
    are no factorial design) leaves out the per-parameter effects, rates and flags; the counts,
    phases, best trials and the warnings on non-finite values and load stay."""
    df, manifest = load_results(run_dir)
    parameters = [p for p in manifest.parameters if p in df.columns]
    metrics = metric_columns(df, parameters)
    if only_metric is not None:
        if only_metric not in metrics:
            raise RunDirError(
                f"{run_dir}: no metric {only_metric!r} (have: {', '.join(metrics) or 'none'})"
            )
        metrics = [only_metric]
    # A trial's value is the mean over its parties: nan or infinite if any party's value is.
    per_trial = df.group_by("trial_id", maintain_order=True).agg(
        *(pl.col(p).first() for p in parameters),
        pl.col("status").first(),
        pl.col("phase").first(),
        *(pl.col(m).cast(pl.Float64).mean() for m in metrics),
    )
    ok = per_trial.filter(pl.col("status") == Status.OK)
    status_counts = {s: int(n) for s, n in per_trial.group_by("status").len().iter_rows()}
    by_phase: dict[str, dict[str, int]] = {}
    for status, phase, n in (
        per_trial.filter(pl.col("status") != Status.OK)
        .group_by("status", "phase")
        .len()
        .iter_rows()
    ):
        by_phase.setdefault(str(phase), {})[str(status)] = int(n)
    report = Report(
        str(run_dir),
        manifest.name,
        parameters,
        metrics,
        per_trial.height,
        status_counts,
        by_phase,
    )
    for metric in metrics:
        left_out = _nonfinite(ok, metric)
        if left_out.count:
            report.nonfinite[metric] = left_out
            kinds = ", ".join(
                f"{n} {kind}"
                for kind, n in (
                    ("nan", left_out.nan),
                    ("inf", left_out.inf),
                    ("-inf", left_out.neg_inf),
                )
                if n
            )
            report.flags.append(
                f"{metric}: {left_out.count} of {left_out.trials} ok trials have a value that is "
                f"not finite ({kinds}); means, intervals and effects are over the other "
                f"{left_out.trials - left_out.count}"
            )
    for parameter in parameters if factorial else []:
        effects = [e for m in metrics if (e := _effect(ok, parameter, m, parameters)) is not None]
        report.effects += effects
        n_values = per_trial[parameter].n_unique()
        compared = [e for e in effects if e.spread is not None]
        if compared and n_values > 1 and not any(e.distinguishable for e in compared):
            moved = (
                "no metric moved at all"
                if all(e.spread == 0 for e in compared)
                else "no metric moved beyond noise"
            )
            # the number of parties is no key of a config: no engine can fail to read it
            question = "" if parameter == COUNT_PARAMETER else " — does the engine read this key?"
            report.flags.append(f"{parameter}: {n_values} values, {moved}{question}")
        for value, group in sorted(
            per_trial.group_by(parameter), key=lambda kv: _sort_key(kv[0][0])
        ):
            counts = {str(s): int(n) for s, n in group.group_by("status").len().iter_rows()}
            report.rates.append(Rates(parameter, value[0], group.height, counts))
    for column, what in (("cpu_pressure", "CPU pressure"), ("machine_load", "machine load")):
        if column not in df.columns:
            continue
        loads = df.group_by("trial_id", maintain_order=True).agg(pl.col(column).first())
        flag = timeouts_track_load(
            per_trial["status"].to_list(), loads[column].cast(pl.Float64).to_list(), what
        )
        if flag is not None:
            report.flags.append(flag)
            break  # one warning: pressure, the closer measure of waiting, when it has one
    report.best = _best(df.filter(pl.col("status") == Status.OK), parameters, metrics)
    return report


def _best(
    ok: pl.DataFrame, parameters: list[str], metrics: list[str], top: int = 3
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per metric and party, the best configurations: the mean over repeats of the finite values;
    `n` counts those, `nonfinite` the repeats left out for a nan or an infinity."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    if ok.height == 0:
        return out
    keys = [*parameters, "party"]
    for metric in metrics:
        value = pl.col(metric).cast(pl.Float64)
        finite = value.is_finite()
        table = (
            ok.group_by(keys)
            .agg(
                value.filter(finite).mean().alias("mean"),
                finite.sum().alias("n"),
                (~finite).sum().alias("nonfinite"),
            )
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
                {
                    "params": {p: row[p] for p in parameters},
                    "mean": row["mean"],
                    "n": row["n"],
                    "nonfinite": row["nonfinite"],
                }
                for row in rows.iter_rows(named=True)
            ]
    return out
