"""Four sweeps started together on one machine, on the real built-in engine, sharing one port range
and one port registry (SEEL_PORTS_DIR).

The range holds barely more ports than the four sweeps can use at once (2 trials x 3 processes
each), so they contend for it. Every sweep must still run every trial to `ok`, and no two trials
(of one sweep or of two) may have held a port at the same time: each ledger line has the trial's
ports, its start and its phase durations, which bound a span in which it surely held them. A
trial that met "Address already in use" anyway must have been retried and ended ok. Each run
directory has its own complete ledger and tables, and its trials' configs carry the ports its
ledger names. No process of any sweep is left, and no port stays reserved.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from ruamel.yaml import YAML

from tests.reliability.kit import (
    assert_ledger_intact,
    assert_nothing_left,
    proc_docs,
    processes_mentioning,
    spawned,
)

ROOT = Path(__file__).resolve().parents[2]
SEEL = [sys.executable, "-m", "seel.cli"]
SWEEPS = 4
PARALLEL = 2
PORTS_AT_ONCE = SWEEPS * PARALLEL * 3  # an aggregator and two parties per trial
MARGIN_S = 0.01  # between a trial's wall-clock start and its monotonic clock


def crowd_sweep(tmp_path: Path, repeats: int) -> tuple[Path, int]:
    """sweeps/quick.yml's grid on its configs, `repeats` times; returns it and its trial count."""
    configs = ROOT / "sweeps" / "configs" / "builtin"
    doc = {
        "name": "crowd",
        "engine": "builtin",
        "configs": {
            "aggregator": str(configs / "config_agg.yml"),
            "parties": [str(configs / "config_party0.yml"), str(configs / "config_party1.yml")],
        },
        "parameters": {
            "hyperparams.global.rounds": {"values": [1, 2, 4]},
            "hyperparams.local.optimizer.lr": {"values": [0.05, 0.5]},
            "hyperparams.global.perc_quorum": {"values": [0.5, 1.0]},
        },
        "repeats": repeats,
        "timeouts": {"train": 60},
    }
    path = tmp_path / "crowd.yml"
    path.write_text(json.dumps(doc, indent=2))
    return path, 12 * repeats


def holding_span(record: dict[str, Any]) -> tuple[float, float]:
    """A span in which the trial surely held its ports: its phases run inside the time between
    reserving and releasing them, and the time outside its phases is before or after them."""
    inside = sum(record["durations"].values())
    outside = float(record["elapsed_s"]) - inside
    start = float(record["started_at"])
    return start + outside + MARGIN_S, start + inside - MARGIN_S


def run_sweeps_at_once(tmp_path: Path, repeats: int, low: int) -> None:
    high = low + PORTS_AT_ONCE + 1
    sweep, trials = crowd_sweep(tmp_path, repeats)
    trial_ids = [f"t{i:05d}" for i in range(trials)]
    env = {**os.environ, "SEEL_PORTS_DIR": str(tmp_path / "ports")}
    run_dirs = [tmp_path / f"run{i}" for i in range(SWEEPS)]
    options = ["--plain", "--parallel", str(PARALLEL), "--port-range", f"{low}-{high}"]
    procs = [
        subprocess.Popen(
            [*SEEL, "run", str(sweep), "--out", str(run_dir), *options],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for run_dir in run_dirs
    ]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert [p.returncode for p in procs] == [0] * SWEEPS, outputs

    held: list[tuple[str, dict[str, Any]]] = []  # (run, record)
    run_ids = set()
    yaml = YAML(typ="safe", pure=True)
    for run_dir, output in zip(run_dirs, outputs, strict=True):
        records = assert_ledger_intact(run_dir, trial_ids)
        assert {r["status"] for r in records} == {"ok"}, output
        run_ids.add(json.loads((run_dir / "plan.json").read_text())["run_id"])
        for record in records:
            ports = record["ports"]
            assert len(set(ports)) == 3 and all(low <= p <= high for p in ports), record
            trial_dir = run_dir / "trials" / record["trial_id"]
            agg = yaml.load((trial_dir / "config_agg.yml").read_text())
            assert agg["connection"]["info"]["port"] == ports[0], trial_dir
            logs = "".join(p.read_text(errors="replace") for p in trial_dir.glob("*.log"))
            if "Address already in use" in logs:  # a port taken all the same: retried, then ok
                assert record["attempts"] > 1, (trial_dir, record["reason"])
            held.append((run_dir.name, record))
        results = pl.read_parquet(run_dir / "results.parquet")
        assert results.height == 2 * trials and results["trial_id"].n_unique() == trials
        assert set(results["status"]) == {"ok"}
        assert pl.read_csv(run_dir / "results.csv").height == results.height
    assert len(run_ids) == SWEEPS

    clashes = []
    for (run_a, a), (run_b, b) in itertools.combinations(held, 2):
        (start_a, end_a), (start_b, end_b) = holding_span(a), holding_span(b)
        shared = set(a["ports"]) & set(b["ports"])
        if shared and start_a < end_b and start_b < end_a:
            clashes.append((run_a, a["trial_id"], run_b, b["trial_id"], sorted(shared)))
    assert not clashes, f"ports held by two trials at once: {clashes[:5]}"
    users: dict[int, set[str]] = {}
    for run, record in held:
        for port in record["ports"]:
            users.setdefault(port, set()).add(run)
    assert max(len(runs) for runs in users.values()) > 1, "the sweeps did not share the range"

    assert_nothing_left([pair for d in run_dirs for pair in spawned(proc_docs(d))])
    assert processes_mentioning(str(tmp_path)) == []
    assert json.loads((tmp_path / "ports" / "registry.json").read_text()) == {}


@pytest.mark.slow
def test_four_sweeps_share_a_narrow_port_range(tmp_path: Path) -> None:
    run_sweeps_at_once(tmp_path, repeats=1, low=24600)


@pytest.mark.reliability_full
def test_four_long_sweeps_share_a_narrow_port_range(tmp_path: Path) -> None:
    run_sweeps_at_once(tmp_path, repeats=4, low=24700)
