"""A Ray run whose cluster has no node left that can hold a trial stops with one line, instead of
waiting for a slot for ever (no cluster is started: the slots never come up)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("ray")

from seel.errors import ClusterLost
from seel.ray.runner import RayRunner
from seel.space import TrialSpec


class _Never:
    """A remote method whose call never returns (an actor Ray cannot place anywhere)."""

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()


class _Cluster:
    def __init__(self) -> None:
        self.asked = 0

    def take_slots(self) -> list[Any]:
        return []

    def new_slot(self, plan: Any) -> Any:
        self.asked += 1
        return SimpleNamespace(begin=_Never())


async def test_no_slot_alive_for_the_wait_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    # The runner kills a slot it gives up on; Ray's own kill would start a Ray instance in this
    # process to do it (ray.init on first use), left running for every later test.
    killed: list[Any] = []
    monkeypatch.setattr(ray, "kill", lambda actor, no_restart=True: killed.append(actor))
    engine = SimpleNamespace(stop_grace_s=0.1, stop_term_grace_s=0.1, cpus_per_trial=2.0)
    plan = SimpleNamespace(engine=engine, spec=SimpleNamespace(port_range=None))
    settings = SimpleNamespace(port_range=None, ports_dir=None)
    cluster = _Cluster()
    runner = RayRunner(
        cluster, plan, SimpleNamespace(path=tmp_path), "run", lambda e: None,  # type: ignore[arg-type]
        settings, slots=1, slot_wait_s=0.05,  # type: ignore[arg-type]
    )
    trial = TrialSpec(trial_id="t00000", index=0, params={}, repeat=0, seed=0)
    try:
        with pytest.raises(ClusterLost, match=r"no Ray node could take a trial \(2 CPUs each\)"):
            async with asyncio.timeout(30):  # not for ever: a TimeoutError fails the test
                await runner.run(trial, 1)
    finally:
        await runner.aclose()
    assert cluster.asked == 1  # it asked for its slot, which never came up
    assert len(killed) == 1 and not ray.is_initialized()
