"""The report's numbers: spreads that are zero print as zero, non-finite values are counted and left
out, statuses come from `Status`; plots of integer parameters have integer ticks."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from seel.analysis import build_report
from seel.manifest import MANIFEST_FILE, RunManifest
from seel.outcome import Outcome, PartyResult, Status
from seel.plot import marginal_figure
from seel.render.report import show_report
from seel.results import result_rows
from seel.store import RESULTS_PARQUET


def write_run(run_dir: Path, trials: list[tuple[dict[str, Any], Status, list[float]]]) -> Path:
    """A run directory whose results are `trials`: (params, status, acc of each party)."""
    rows = []
    for index, (params, status, accs) in enumerate(trials):
        o = Outcome(
            trial_id=f"t{index:05d}", index=index, params=params, repeat=0, seed=0, status=status,
            phase=None if status is Status.OK else "train", reason="", attempts=1, started_at=0.0,
            elapsed_s=1.0, durations={"init": 1.0}, rounds_completed=1, round_accuracies=(0.5,),
            aggregator_exit=0, parties=tuple(PartyResult(i, 0, {"acc": a}) for i, a in enumerate(accs)),
            ports=(),
        )
        rows += result_rows(o.to_json())
    run_dir.mkdir(parents=True)
    pl.from_dicts(rows, infer_schema_length=None).write_parquet(run_dir / RESULTS_PARQUET)
    manifest = RunManifest(
        run_id="r", sweep="sweep.yml", name="t", engine="builtin", fingerprint="f",
        trial_count=len(trials), budget=False,
        parameters={name: {"values": []} for name in trials[0][0]}, fixed={}, repeats=1,
        overrides=[],
    )
    (run_dir / MANIFEST_FILE).write_text(json.dumps(manifest.to_json()))
    return run_dir


def shown(report: Any, metric: str = "acc") -> str:
    out = io.StringIO()
    show_report(report, Console(file=out, width=200, markup=False, highlight=False), metric)
    return out.getvalue()


def test_a_spread_that_is_zero_is_zero(tmp_path: Path) -> None:
    # 0.1 three times: summing and dividing leaves 1.4e-17, which printed as ± 4.678e-17
    # (0.1, 0.2, 0.3) and (0.2, 0.3, 0.1) have means that differ in the last bit only
    trials = [({"x": 1}, Status.OK, [v]) for v in (0.1, 0.1, 0.1)]
    trials += [({"x": 2}, Status.OK, [v]) for v in (0.1, 0.1, 0.1)]
    report = build_report(write_run(tmp_path / "flat", trials))
    [effect] = report.effects
    assert [(lv.mean, lv.ci95) for lv in effect.levels] == [(0.1, 0.0), (0.1, 0.0)]
    assert effect.spread == 0.0
    assert "no metric moved at all" in report.flags[0]
    text = shown(report)
    assert "± 0 " in text and "e-1" not in text

    orders = [({"x": 1}, Status.OK, [v]) for v in (0.1, 0.2, 0.3)]
    orders += [({"x": 2}, Status.OK, [v]) for v in (0.2, 0.3, 0.1)]
    [effect] = build_report(write_run(tmp_path / "orders", orders)).effects
    assert effect.spread == 0.0


def test_a_real_spread_is_kept(tmp_path: Path) -> None:
    trials = [({"x": 1}, Status.OK, [v]) for v in (0.1, 0.1 + 1e-9)]
    trials += [({"x": 2}, Status.OK, [v]) for v in (0.2, 0.2)]
    [effect] = build_report(write_run(tmp_path / "run", trials)).effects
    assert effect.levels[0].ci95 is not None and effect.levels[0].ci95 > 0
    assert effect.spread is not None and math.isclose(effect.spread, 0.1, rel_tol=1e-6)


def test_non_finite_values_are_counted_and_left_out(tmp_path: Path) -> None:
    trials = [
        ({"x": 1}, Status.OK, [0.5, 0.7]),
        ({"x": 1}, Status.OK, [0.5, math.nan]),  # one party diverged: the trial's value is nan
        ({"x": 2}, Status.OK, [0.8, 0.8]),
        ({"x": 2}, Status.OK, [math.inf, 0.8]),
        ({"x": 2}, Status.TIMEOUT, [math.nan, math.nan]),  # not ok: not in the means at all
    ]
    report = build_report(write_run(tmp_path / "run", trials))
    [effect] = report.effects
    assert [(lv.value, lv.n, lv.mean, lv.nonfinite) for lv in effect.levels] == [
        (1, 1, 0.6, 1),
        (2, 1, 0.8, 1),
    ]
    assert effect.spread is not None and math.isclose(effect.spread, 0.2)
    counts = report.nonfinite["acc"]
    assert (counts.trials, counts.nan, counts.inf, counts.neg_inf, counts.count) == (4, 1, 1, 0, 2)
    assert report.flags[0] == (
        "acc: 2 of 4 ok trials have a value that is not finite (1 nan, 1 inf); "
        "means, intervals and effects are over the other 2"
    )
    best = report.best["acc"]
    assert [(r["params"], r["mean"], r["n"], r["nonfinite"]) for r in best["0"]] == [
        ({"x": 2}, 0.8, 1, 1),
        ({"x": 1}, 0.5, 2, 0),
    ]
    assert "1 (+1 nan/inf)" in shown(report)


def test_status_columns_follow_status(tmp_path: Path) -> None:
    trials = [({"x": 1}, Status.OK, [0.5]), ({"x": 2}, Status.CRASHED, [])]
    report = build_report(write_run(tmp_path / "run", trials))
    doc = report.to_json()
    assert doc["schema"] == 1
    assert list(doc["rates"][0]["rates"]) == [str(s) for s in Status]
    text = shown(report)
    for status in Status:
        if status not in (Status.OK, Status.INTERRUPTED):
            assert f" {status} " in text


def test_an_integer_parameter_gets_integer_ticks(tmp_path: Path) -> None:
    trials = [({"rounds": r}, Status.OK, [0.5 + 0.1 * r]) for r in (2, 3, 4) for _ in range(2)]
    run_dir = write_run(tmp_path / "run", trials)
    frame = pl.read_parquet(run_dir / RESULTS_PARQUET)
    fig = marginal_figure(frame, ["rounds"], "acc")
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if 2 <= t <= 4]
    assert ticks and all(float(t).is_integer() for t in ticks)
