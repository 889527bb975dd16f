"""Faults on a real multi-node Ray cluster on this machine (a head and three worker nodes, the
session's: tests/conftest.py). Each sweep's trials hold in their train phase until the test
creates a file, so a fault always strikes trials that are running.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.raykit import (
    Controller,
    controllers_stopped,  # noqa: F401 (an autouse fixture: imported to take effect here)
    fake_sweep,
    in_phase,
    kill_all,
    ledger,
    node_of,
    run_processes,
    wait_gone,
)

pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

# Ray stops a dead driver's actors, and their processes die with them: a bound well above what
# it takes (README: Running on a Ray cluster), so that a loaded machine does not fail the test.
GONE_WITHIN_S = 60.0


def held_sweep(tmp_path: Path, trials: int) -> tuple[Path, Path]:
    hold = tmp_path / "go"
    args = [f"--hold-train-until {hold} --rounds {i + 1}" for i in range(trials)]
    return fake_sweep(tmp_path, args), hold


def test_ctrl_c_stops_every_trial_on_every_node_through_the_ladder(
    ray_cluster: Any, tmp_path: Path
) -> None:
    sweep, _ = held_sweep(tmp_path, 3)
    out = tmp_path / "run"
    ctl = Controller([str(sweep), "--ray", ray_cluster.address, "--out", str(out), "--parallel", "2"], tmp_path)
    ctl.wait_for(in_phase("train", 2))
    assert ctl.run_id is not None and run_processes(ctl.run_id)
    ctl.signal(signal.SIGINT)
    assert ctl.finish() == 130, ctl.stderr()
    finished = [e for e in ctl.events if e["event"] == "trial_finished"]
    assert sorted(e["status"] for e in finished) == ["interrupted", "interrupted"], ctl.events
    assert len({e["node"] for e in finished}) == 2  # one trial on each of two nodes
    for record in ledger(out):
        assert record["status"] == "interrupted"
        transcript = (out / "trials" / record["trial_id"] / "aggregator.log").read_text()
        assert "STOP" in transcript  # the first rung, sent on the node
    assert run_processes(ctl.run_id) == []  # stopped before the controller returned


def test_sigkilled_controller_leaves_no_process_and_the_same_command_resumes(
    ray_cluster: Any, tmp_path: Path
) -> None:
    sweep, hold = held_sweep(tmp_path, 3)
    out = tmp_path / "run"
    args = [str(sweep), "--ray", ray_cluster.address, "--out", str(out), "--parallel", "2"]
    ctl = Controller(args, tmp_path)
    ctl.wait_for(in_phase("train", 2))
    assert ctl.run_id is not None
    assert run_processes(ctl.run_id)  # something to leave behind, if the guarantee failed
    ctl.signal(signal.SIGKILL)
    ctl.close()
    left, _ = wait_gone(ctl.run_id, GONE_WITHIN_S)
    kill_all(left)
    assert left == []
    hold.touch()
    again = Controller(args, tmp_path)
    assert again.finish() == 0, again.stderr()
    records = ledger(out)
    assert sorted(r["trial_id"] for r in records) == ["t00000", "t00001", "t00002"]
    assert all(r["status"] == "ok" for r in records), [
        (r["trial_id"], r["status"], r["phase"], r["attempts"], r["reason"]) for r in records
    ]
    for record in records:
        assert (out / "trials" / record["trial_id"] / "outcome.json").is_file()
        assert (out / "trials" / record["trial_id"] / "party1.log").is_file()


def test_a_lost_node_fails_its_trial_which_reruns_on_another_node_recorded_once(
    ray_cluster: Any, tmp_path: Path
) -> None:
    sweep, hold = held_sweep(tmp_path, 3)
    out = tmp_path / "run"
    ctl = Controller([str(sweep), "--ray", ray_cluster.address, "--out", str(out), "--parallel", "2"], tmp_path)
    ctl.wait_for(in_phase("train", 2))
    placed = {e["trial"] for e in ctl.events if e["event"] == "phase" and e["phase"] == "train"}
    assert ctl.run_id is not None
    # One of the two busy nodes (the third is idle): the one whose raylet a trial's process
    # descends from.
    victim = node_of(ray_cluster, run_processes(ctl.run_id)[0])
    ray_cluster.remove_node(victim, allow_graceful=False)
    ctl.wait_for(lambda events: any(e["event"] == "trial_finished" and e["will_retry"] for e in events))
    hold.touch()
    assert ctl.finish() == 0, ctl.stderr()
    records = ledger(out)
    assert sorted(r["trial_id"] for r in records) == ["t00000", "t00001", "t00002"]
    assert all(r["status"] == "ok" for r in records), [
        (r["trial_id"], r["status"], r["phase"], r["attempts"], r["reason"]) for r in records
    ]
    [retried] = [e for e in ctl.events if e["event"] == "trial_finished" and e["will_retry"]]
    assert retried["status"] == "failed" and "lost" in retried["reason"]
    assert retried["trial"] in placed
    [rerun] = [r for r in records if r["trial_id"] == retried["trial"]]
    assert rerun["attempts"] == 2 and rerun["node"] != retried["node"]
    # the lost node is replaced after the test (tests/conftest.py: ray_cluster)
