"""Parties that print `nan` and `inf` metrics, through the real `seel` binary: `run --json` exits 0
with strict JSON on stdout, the values are in the results as what they are, and `report` works."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import polars as pl
import pytest

from tests.test_trial_fake import write_sweep

ROOT = Path(__file__).resolve().parents[1]

# party 0 always diverges; party 1 is swept: an infinite accuracy, or a loss of minus infinity
PARTY0 = "--metrics \"{'loss': nan, 'acc': 0.5}\""
PARTY1 = [
    "--metrics \"{'loss': 0.25, 'acc': inf}\"",
    "--metrics \"{'loss': -inf, 'acc': 0.75}\"",
]


def strict(line: str) -> Any:
    """Parse one line as RFC 8259 JSON: the NaN and Infinity tokens are refused."""

    def refuse(token: str) -> Any:
        raise ValueError(f"not JSON: {token}")

    return json.loads(line, parse_constant=refuse)


def seel(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEEL_PORTS_DIR": str(cwd / "ports")}
    return subprocess.run(
        [sys.executable, "-m", "seel.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def nonfinite_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A sweep of 2 x 2 trials whose parties print nan and inf; (run dir, stdout of --json)."""
    tmp = tmp_path_factory.mktemp("nonfinite")
    sweep = write_sweep(
        tmp,
        "builtin",
        party_args=(PARTY0, ""),
        parameters={"party[1].fake.args": {"values": PARTY1}},
    )
    doc = json.loads(sweep.read_text())
    sweep.write_text(json.dumps({**doc, "repeats": 2}, indent=2))
    done = seel("run", str(sweep), "--out", str(tmp / "run"), "--json", cwd=tmp)
    assert done.returncode == 0, done.stderr
    return tmp / "run", done.stdout


def test_run_json_is_strict_json_and_keeps_the_values(nonfinite_run: tuple[Path, str]) -> None:
    _, stdout = nonfinite_run
    schema = json.loads((resources.files("seel") / "render" / "event_schema.json").read_text())
    events = [strict(line) for line in stdout.splitlines()]
    for event in events:
        jsonschema.validate(event, schema)
    finished = [e for e in events if e["event"] == "trial_finished"]
    assert [e["status"] for e in finished] == ["ok"] * 4
    assert {e["metrics"]["0"]["loss"] for e in finished} == {"NaN"}
    assert sorted(str(e["metrics"]["1"]["acc"]) for e in finished) == [
        "0.75",
        "0.75",
        "Infinity",
        "Infinity",
    ]
    assert {e["metrics"]["1"]["loss"] for e in finished} == {0.25, "-Infinity"}
    last = events[-1]
    assert last["event"] == "sweep_finished" and last["counts"] == {"ok": 4}
    # the best accuracy is a finite one: an infinite mean is never the best
    assert last["best"]["value"] == pytest.approx((0.5 + 0.75) / 2)


def test_ledger_and_outcomes_are_strict_json(nonfinite_run: tuple[Path, str]) -> None:
    run_dir, _ = nonfinite_run
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    assert len(lines) == 4
    for line in lines:
        doc = strict(line)
        assert doc["parties"][0]["metrics"]["loss"] == "NaN"
        strict((run_dir / "trials" / doc["trial_id"] / "outcome.json").read_text())


def test_results_hold_nan_and_infinities_as_floats(nonfinite_run: tuple[Path, str]) -> None:
    run_dir, _ = nonfinite_run
    for frame in (
        pl.read_parquet(run_dir / "results.parquet"),
        pl.read_csv(run_dir / "results.csv"),
    ):
        assert frame.schema["loss"] == pl.Float64 and frame.schema["acc"] == pl.Float64
        party0 = frame.filter(pl.col("party") == 0)
        party1 = frame.filter(pl.col("party") == 1).sort("index")
        assert party0.height == party1.height == 4
        assert all(math.isnan(v) for v in party0["loss"].to_list())
        swept = party1["party[1].fake.args"].to_list()
        for args, loss, acc in zip(swept, party1["loss"], party1["acc"], strict=True):
            if args == PARTY1[0]:
                assert (loss, acc) == (0.25, math.inf)
            else:
                assert (loss, acc) == (-math.inf, 0.75)


def test_report_counts_the_nonfinite_values_and_uses_the_others(
    nonfinite_run: tuple[Path, str],
) -> None:
    run_dir, _ = nonfinite_run
    done = seel("report", str(run_dir), "--json", cwd=run_dir.parent)
    assert done.returncode == 0, done.stderr
    report = strict(done.stdout)
    assert report["schema"] == 1
    assert report["status_counts"] == {"ok": 4}
    # a trial's value is the mean over its parties: nan (loss) or inf (acc) if one party's is
    assert report["nonfinite"]["loss"] == {"trials": 4, "nan": 4, "inf": 0, "neg_inf": 0, "count": 4}
    assert report["nonfinite"]["acc"] == {"trials": 4, "nan": 0, "inf": 2, "neg_inf": 0, "count": 2}
    assert any(flag.startswith("acc: 2 of 4 ok trials") for flag in report["flags"])
    [acc] = [e for e in report["effects"] if e["metric"] == "acc"]
    levels = {lv["value"]: lv for lv in acc["levels"]}
    assert levels[PARTY1[0]] == {
        "value": PARTY1[0], "n": 0, "mean": None, "ci95": None, "nonfinite": 2,
    }
    assert levels[PARTY1[1]]["n"] == 2 and levels[PARTY1[1]]["nonfinite"] == 0
    assert levels[PARTY1[1]]["mean"] == pytest.approx(0.625)
    assert levels[PARTY1[1]]["ci95"] == 0  # two equal values: no spread, not 1e-17
    # party 1's best loss is finite, and the repeats that were -inf are counted, not averaged
    [best_party1] = report["best"]["loss"]["1"]
    assert best_party1["mean"] == 0.25 and (best_party1["n"], best_party1["nonfinite"]) == (2, 0)
    assert "0" not in report["best"]["loss"]  # party 0 printed no finite loss

    table = seel("report", str(run_dir), "--metric", "acc", cwd=run_dir.parent)
    assert table.returncode == 0, table.stderr
    assert "acc: 2 of 4 ok trials have a value that is not finite (2 inf)" in table.stdout
    assert "0 (+2 nan/inf)" in table.stdout


def test_a_reader_that_goes_away_does_not_end_the_sweep(tmp_path: Path) -> None:
    """`seel run --json | head -1`: the sweep finishes, records every trial and exits 0."""
    gate = tmp_path / "reader-gone"
    sweep = write_sweep(
        tmp_path,
        "builtin",
        agg_args=f"--wait-for {shlex.quote(str(gate))}",  # no phase event before the reader has gone
        parameters={"party[1].fake.args": {"values": ["", ""]}},
    )
    env = {**os.environ, "SEEL_PORTS_DIR": str(tmp_path / "ports")}
    with subprocess.Popen(
        [sys.executable, "-m", "seel.cli", "run", str(sweep), "--out", str(tmp_path / "run"), "--json"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        assert strict(child.stdout.readline())["event"] == "sweep_started"
        child.stdout.close()
        gate.touch()
        stderr = child.stderr.read()
        assert child.wait(timeout=300) == 0, stderr
    failures = [line for line in stderr.splitlines() if "failed and is switched off" in line]
    assert len(failures) == 1 and "--json output" in failures[0] and "BrokenPipeError" in failures[0]
    assert len((tmp_path / "run" / "ledger.jsonl").read_text().splitlines()) == 2
