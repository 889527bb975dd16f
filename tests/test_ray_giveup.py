"""Slots that do not come up, without a cluster (fake actors): a Ray run whose cluster has no node
left that can hold a trial stops with one line, instead of waiting for a slot for ever; a slot
that dies while it starts is replaced."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("ray")

import seel
from seel.errors import ClusterLost
from seel.ray import runner as ray_runner
from seel.ray.runner import RayRunner
from seel.space import TrialSpec


class _Never:
    """A remote method whose call never returns (an actor Ray cannot place anywhere)."""

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()


class _Returns:
    """A remote method whose call ends at once, with this value or this error."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        done = asyncio.get_running_loop().create_future()
        if self.error is not None:
            done.set_exception(self.error)
        else:
            done.set_result(self.value)
        return done


class _Cluster:
    def __init__(self, begins: list[Any] | None = None) -> None:
        self.asked = 0
        self.begins = begins or []  # the begin of each slot asked for; then _Never

    def take_slots(self) -> list[Any]:
        return []

    def new_slot(self, plan: Any) -> Any:
        self.asked += 1
        begin = self.begins.pop(0) if self.begins else _Never()
        return SimpleNamespace(begin=begin, aclose=_Returns())


@pytest.fixture
def killed(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The actors the runner kills. Ray's own kill would start a Ray instance in this process to
    do it (ray.init on first use), left running for every later test."""
    import ray

    actors: list[Any] = []
    monkeypatch.setattr(ray, "kill", lambda actor, no_restart=True: actors.append(actor))
    return actors


def _runner(tmp_path: Path, cluster: _Cluster, slot_wait_s: float) -> RayRunner:
    engine = SimpleNamespace(stop_grace_s=0.1, stop_term_grace_s=0.1, cpus_per_trial=2.0)
    plan = SimpleNamespace(engine=engine, spec=SimpleNamespace(port_range=None))
    settings = SimpleNamespace(port_range=None, ports_dir=None)
    return RayRunner(
        cluster, plan, SimpleNamespace(path=tmp_path), "run", lambda e: None,  # type: ignore[arg-type]
        settings, slots=1, slot_wait_s=slot_wait_s,  # type: ignore[arg-type]
    )


async def test_no_slot_alive_for_the_wait_stops_the_run(tmp_path: Path, killed: list[Any]) -> None:
    import ray

    cluster = _Cluster()
    runner = _runner(tmp_path, cluster, slot_wait_s=0.05)
    trial = TrialSpec(trial_id="t00000", index=0, params={}, repeat=0, seed=0)
    try:
        with pytest.raises(ClusterLost, match=r"no Ray node could take a trial \(2 CPUs each\)"):
            async with asyncio.timeout(30):  # not for ever: a TimeoutError fails the test
                await runner.run(trial, 1)
    finally:
        await runner.aclose()
    assert cluster.asked == 1  # it asked for its slot, which never came up
    assert len(killed) == 1 and not ray.is_initialized()


async def test_a_slot_that_dies_while_it_starts_is_replaced(
    tmp_path: Path, killed: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.exceptions import RayActorError

    monkeypatch.setattr(ray_runner, "RESTART_FIRST_S", 0.01)
    begins = [
        _Returns(error=RayActorError()),  # its node went while it started
        _Returns(error=RayActorError()),  # and the next one's: a pause twice as long
        _Returns(("10.0.0.2/node-b", seel.__version__)),
    ]
    cluster = _Cluster(begins)
    runner = _runner(tmp_path, cluster, slot_wait_s=60)
    try:
        async with asyncio.timeout(30):  # not for ever: a TimeoutError fails the test
            slot = await runner._take_slot()
    finally:
        await runner.aclose()
    assert slot.node == "10.0.0.2/node-b"
    assert cluster.asked == 3 and len(killed) == 3  # two that died, and the third at aclose
