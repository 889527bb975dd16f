"""The real `seel` binary on the real built-in engine: whole sweeps, resume, clashes, Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pexpect
import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
SEEL = [sys.executable, "-m", "seel.cli"]


def seel_env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "SEEL_PORTS_DIR": str(tmp / "ports")}


def _start_ticks(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except OSError:
        return None


def spawned(run_dir: Path) -> list[tuple[int, int | None]]:
    """(pid, start ticks) of every process the sweep's pid ledger has seen spawned."""
    out = []
    for line in (run_dir / "procs.jsonl").read_text().splitlines():
        doc = json.loads(line)
        if doc.get("event") == "spawn":
            out.append((doc["pid"], doc["ticks"]))
    return out


def alive(procs: list[tuple[int, int | None]]) -> list[int]:
    return [pid for pid, ticks in procs if ticks is not None and _start_ticks(pid) == ticks]


def ledger(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines() if line]


@pytest.mark.slow
def test_table1_survives_sigkill_and_resumes_losing_and_duplicating_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # Table I with two of its five max_timeout values: 30 trials. How many run after the kill
    # does not matter; that each runs exactly once does.
    trials = 30
    cmd = [*SEEL, "run", str(ROOT / "sweeps" / "paper-table1.yml"), "hyperparams.global.max_timeout=0,50",
           "--out", str(out), "--parallel", "2", "--plain"]
    child = pexpect.spawn(cmd[0], cmd[1:], cwd=str(tmp_path), env=seel_env(tmp_path), encoding="utf-8", timeout=120)
    child.expect(rf"\[10/{trials}\]")
    seen = spawned(out)
    os.kill(child.pid, signal.SIGKILL)
    child.expect(pexpect.EOF)
    child.close()
    before = {str(d["trial_id"]) for d in ledger(out)}
    assert 10 <= len(before) < trials

    done = subprocess.run(cmd, cwd=tmp_path, env=seel_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{trials - len(before)} left to run" in done.stdout
    assert alive(seen) == []
    assert alive(spawned(out)) == []

    records = ledger(out)
    final = [str(d["trial_id"]) for d in records if d["status"] != "interrupted"]
    assert sorted(final) == [f"t{i:05d}" for i in range(trials)]  # each exactly once
    results = pl.read_parquet(out / "results.parquet")
    assert results.height == 2 * trials and results["trial_id"].n_unique() == trials
    assert set(results["status"]) == {"ok"}
    assert results.filter(pl.col("status") == "ok")["acc"].min() > 0.8
    grid = results.select("hyperparams.global.max_timeout", "hyperparams.global.rounds",
                          "hyperparams.global.termination_accuracy").unique()
    assert grid.height == trials
    assert sorted(grid["hyperparams.global.termination_accuracy"].unique()) == [0.95, 0.96, 0.97, 0.98, 0.99]


@pytest.mark.slow
def test_two_sweeps_at_once_share_a_narrow_port_range_without_clashing(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [*SEEL, "run", str(ROOT / "sweeps" / "quick.yml"), "--out", str(tmp_path / f"run{i}"),
             "--parallel", "2", "--port-range", "21000-21011", "--retries", "0"],
            cwd=tmp_path, env=seel_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for i in range(2):
        records = ledger(tmp_path / f"run{i}")
        assert len(records) == 12 and {r["status"] for r in records} == {"ok"}, outputs[i]
        assert all(21000 <= port <= 21011 for r in records for port in r["ports"])  # type: ignore[attr-defined]


@pytest.mark.slow
def test_ctrl_c_stops_everything_keeps_results_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "run"
    child = pexpect.spawn(SEEL[0], [*SEEL[1:], "run", str(ROOT / "sweeps" / "paper-table1.yml"), "--out", str(out),
                                                "--plain"],
                          cwd=str(tmp_path), env=seel_env(tmp_path), encoding="utf-8", timeout=60)
    child.expect(r"\[ *3/75\]")
    child.sendintr()
    child.expect("stopping every trial")
    child.expect(pexpect.EOF, timeout=5)
    child.close()
    assert child.exitstatus == 130
    assert alive(spawned(out)) == []
    records = ledger(out)
    assert sum(r["status"] == "ok" for r in records) >= 3
    assert pl.read_parquet(out / "results.parquet")["trial_id"].n_unique() == len({r["trial_id"] for r in records})


@pytest.mark.parametrize(
    ("sweep", "args", "message"),
    [
        ("parameters:\n  hyperparams.global.roundz: {values: [1, 2]}\n", [], "parameters.hyperparams.global.roundz"),
        ("parameters:\n  hyperparams.global.rounds: {min: 4, max: 2, step: 1}\n", [], "empty range"),
        ("parameters:\n  hyperparams.global.rounds: {min: 1, max: 2, step: 0}\n", [], "step must be > 0"),
        ("parameters:\n  hyperparams.global.rounds: {values: [2.5]}\n", [], "parameters.hyperparams.global.rounds"),
        ("parameters:\n  hyperparams.global.perc_quorum: {values: [0.5, 1.5]}\n", [], "value 1.5"),
        ("parameters: {}\n", ["hyperparams.global.rounds=two,three"], "hyperparams.global.rounds"),
        ("parameters: [oops\n", [], "malformed YAML"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_starts_nothing(tmp_path: Path, sweep: str, args: list[str], message: str) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "sweeps" / "configs" / "builtin", configs)
    path = tmp_path / "bad.yml"
    path.write_text(
        "engine: builtin\nconfigs:\n  aggregator: configs/config_agg.yml\n  parties:\n"
        "    - configs/config_party0.yml\n    - configs/config_party1.yml\n" + sweep
    )
    done = subprocess.run([*SEEL, "run", str(path), *args, "--out", str(tmp_path / "run")], cwd=tmp_path,
                          env=seel_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "run").exists()


def test_user_configs_are_never_modified(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "sweeps" / "configs" / "builtin", configs)
    before = {p.name: p.read_bytes() for p in configs.iterdir()}
    path = tmp_path / "s.yml"
    path.write_text(
        "configs:\n  aggregator: configs/config_agg.yml\n  parties:\n"
        "    - configs/config_party0.yml\n    - configs/config_party1.yml\n"
        "parameters:\n  hyperparams.global.rounds: {values: [1, 2]}\n"
    )
    done = subprocess.run([*SEEL, "run", "s.yml", "--out", "run"], cwd=tmp_path,  # relative paths
                          env=seel_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 ok" in done.stdout, done.stdout
    assert {p.name: p.read_bytes() for p in configs.iterdir()} == before
    trial_cfg = (tmp_path / "run" / "trials" / "t00001" / "config_agg.yml").read_text()
    assert "rounds: 2                    # training rounds" in trial_cfg
    assert "# Aggregator of the built-in engine" in trial_cfg
