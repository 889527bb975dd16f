"""`seel run sweeps/paper-table1.yml --ray local` end to end: a Ray instance started for the
sweep, the real built-in engine, a run directory like a local run's, and nothing left after."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pexpect
import polars as pl
import pytest

from tests.raykit import SEEL, fake_sweep, ledger, run_processes

pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]


def _marked(mark: str) -> list[int]:
    """Live processes whose environment carries `mark` (the controller's and what it started)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and mark.encode() in environ:
            found.append(int(entry))
    return found


def test_paper_table1_on_a_local_ray_instance(tmp_path: Path) -> None:
    out = tmp_path / "run"
    mark = f"SEEL_TEST_MARK={uuid.uuid4().hex}"
    cmd = [
        *SEEL, "run", str(ROOT / "sweeps" / "paper-table1.yml"),
        "hyperparams.global.rounds=2", "hyperparams.global.max_timeout=0,50",
        "hyperparams.global.termination_accuracy=0.95",
        "--ray", "local", "--parallel", "2", "--out", str(out), "--json",
    ]
    env = {**os.environ, **dict([mark.split("=", 1)])}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]  # stdout is only JSON
    run_id = events[0]["run_id"]
    finished = [e for e in events if e["event"] == "trial_finished"]
    assert [e["status"] for e in finished] == ["ok", "ok"]
    assert all(e["node"] for e in finished)
    assert [e["event"] for e in events].count("round") == 4  # streamed as on one machine
    records = ledger(out)
    assert sorted(r["trial_id"] for r in records) == ["t00000", "t00001"]
    for record in records:
        trial_dir = out / "trials" / record["trial_id"]
        names = {p.name for p in trial_dir.iterdir()}
        assert {"config_agg.yml", "config_party0.yml", "aggregator.log", "party1.log"} <= names
        assert "outcome.json" in names
        assert "Finished Global Training" in (trial_dir / "aggregator.log").read_text()
    assert pl.read_parquet(out / "results.parquet").height == 4  # trials x parties
    assert run_processes(run_id) == []
    assert _marked(mark) == []  # the Ray instance started for the sweep is gone too


def test_ctrl_c_at_a_terminal_stops_a_local_ray_sweep_and_its_instance(tmp_path: Path) -> None:
    """Ctrl-C at a terminal signals the whole foreground group: the controller and whatever of
    the Ray instance shares it. Every trial still ends interrupted, and nothing is left."""
    hold = tmp_path / "go"  # never created: the trials hold in train
    sweep = fake_sweep(tmp_path, [f"--hold-train-until {hold} --rounds {n}" for n in (1, 2, 3)])
    mark = f"SEEL_TEST_MARK={uuid.uuid4().hex}"
    out = tmp_path / "run"
    args = ["run", str(sweep), "--ray", "local", "--parallel", "2", "--out", str(out), "--json"]
    env = {**os.environ, **dict([mark.split("=", 1)])}
    child = pexpect.spawn(SEEL[0], [*SEEL[1:], *args], cwd=str(tmp_path), env=env, timeout=200)
    try:
        for _ in range(2):  # both trials running, on their slots
            child.expect(r'"event":"phase"[^\n]*"phase":"train"')
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 130
    assert sorted(r["status"] for r in ledger(out)) == ["interrupted", "interrupted"]
    assert _marked(mark) == []
