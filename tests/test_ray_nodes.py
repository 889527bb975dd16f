"""What nodes a sweep can use: SEEL missing or of another version on a node is one line before
any trial starts; several sweeps share one cluster. The session's cluster (tests/conftest.py)
serves the module, with an odd node added for a case and removed after it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.raykit import (
    SEEL,
    Controller,
    add_worker,
    controllers_stopped,  # noqa: F401 (an autouse fixture: imported to take effect here)
    fake_sweep,
    ledger,
)

pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]


def fake_seel(root: Path, init: str) -> Path:
    """A folder that, first on a node's PYTHONPATH, makes `import seel` run `init`."""
    (root / "seel").mkdir(parents=True)
    (root / "seel" / "__init__.py").write_text(init)
    return root


@pytest.mark.parametrize(
    ("init", "says"),
    [
        ('__version__ = "0.0.9"\n', "has seel 0.0.9, this controller has"),
        (
            'raise ModuleNotFoundError("No module named \'seel\'", name="seel")\n',
            "SEEL is not installed there (No module named 'seel')",
        ),
    ],
    ids=["other-version", "missing"],
)
def test_a_node_without_this_seel_is_one_line_before_any_trial(
    ray_cluster: Any, tmp_path: Path, init: str, says: str
) -> None:
    # removed after the test (tests/conftest.py: ray_cluster)
    odd = add_worker(ray_cluster, env_vars={"PYTHONPATH": str(fake_seel(tmp_path / "site", init))})
    ray_cluster.wait_for_nodes()
    sweep = fake_sweep(tmp_path, ["--rounds 1"])
    out = tmp_path / "run"
    cmd = [*SEEL, "run", str(sweep), "--ray", ray_cluster.address, "--out", str(out), "--json"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = [x for x in done.stderr.splitlines() if x.startswith("seel:")]
    assert line.startswith(f"seel: ray node {odd.node_ip_address}/{odd.node_id[:8]}: "), line
    assert says in line
    assert not out.exists()  # nothing started


def test_two_sweeps_share_one_cluster(ray_cluster: Any, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        sweep = fake_sweep(folder, ["--rounds 1", "--rounds 2"], name=f"share-{name}")
        args = [str(sweep), "--ray", ray_cluster.address, "--out", str(folder / "run"), "--parallel", "1"]
        runs.append((Controller(args, folder), folder / "run"))
    for ctl, out in runs:
        assert ctl.finish() == 0, ctl.stderr()
        assert [r["status"] for r in ledger(out)] == ["ok", "ok"]


async def test_a_trial_the_source_prunes_on_a_node_is_stopped_there_and_recorded_as_pruned(
    ray_cluster: Any, tmp_path: Path
) -> None:
    from seel.events import Event
    from seel.grid import GridSource
    from seel.plan import Plan
    from seel.ray.cluster import connect
    from seel.run import RunSettings, prepare, run_sweep
    from seel.store import RunDir

    class Drop:
        def emit(self, event: Event) -> None:
            pass

    class PruneAfterFirstRound(GridSource):
        def observe(self, trial_id: str, round: int, value: float | None) -> bool:
            return round >= 1

    def source(plan: Plan, run_dir: RunDir) -> GridSource:
        return PruneAfterFirstRound.of(plan.spec, run_dir.done_ids())

    # The aggregator would hang after round 1 until the train timeout; pruning ends it first.
    sweep = fake_sweep(tmp_path, ["--hang-on ROUND1"])
    settings = RunSettings(sweep=sweep, out=tmp_path / "run", parallel=1)
    plan = prepare(settings)
    connected = connect(ray_cluster.address, plan.engine.cpus_per_trial)
    try:
        result = await run_sweep(settings, Drop(), plan, source=source, runner=connected.runner)
    finally:
        connected.close()
    [record] = ledger(result.run_dir)
    assert (record["status"], record["phase"], record["attempts"]) == ("pruned", "train", 1)
    assert record["reason"] == "pruned after round 1"
    assert record["durations"]["train"] < 60  # ended by the pruning, not by the train timeout
    assert record["node"]
