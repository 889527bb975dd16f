"""A Ray cluster for one sweep: connect to it (or start a local one), check SEEL on every node.

`--ray ADDRESS` takes what `ray.init` takes (`auto`, `HOST:PORT`, `ray://HOST:PORT`) or `local`:
a Ray instance started for this sweep on this machine and stopped after it. Before any trial
starts, every alive node that could host a trial is asked which SEEL it has; a node without SEEL
or with another version is one line naming it (ClusterError), not a crash in the middle.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import seel
from seel.errors import SeelError

if TYPE_CHECKING:
    from seel.events import Event
    from seel.plan import Plan
    from seel.ray.runner import RayRunner
    from seel.run import RunSettings
    from seel.store import RunDir

PROBE_TIMEOUT_S = 60.0
SLOT_START_TIMEOUT_S = 30.0  # for the slots to be up before the sweep; later ones join as they come


class ClusterError(SeelError):
    """The Ray cluster cannot run this sweep (unreachable, or a node without the same SEEL)."""


@dataclass(frozen=True)
class Node:
    """An alive node that can host trials."""

    node_id: str
    address: str
    cpus: float

    @property
    def name(self) -> str:
        return f"{self.address}/{self.node_id[:8]}"


def _version_probe() -> Callable[[], tuple[str | None, str]]:
    # Made here, not at module level, so that Ray sends the function itself, not a reference to
    # this module: it must run on a node where SEEL is missing or another version.
    def probe() -> tuple[str | None, str]:
        try:
            import seel as installed
        except ImportError as exc:
            return None, str(exc)
        return str(getattr(installed, "__version__", "unknown")), ""

    return probe


class Cluster:
    """A connected Ray cluster whose trial nodes all have this SEEL."""

    def __init__(self, address: str, nodes: list[Node]) -> None:
        self.address = address
        self.nodes = nodes
        self._plan: tuple[Plan, Any] | None = None  # the plan, and its object in the store
        self._warm: list[Any] = []  # slot actors started ahead of the sweep

    def slots(self, cpus_per_trial: float) -> int:
        """How many trials the cluster's CPUs hold at once (at least 1)."""
        return max(1, sum(int(n.cpus // cpus_per_trial) for n in self.nodes))

    def slots_for(self, settings: RunSettings, plan: Plan) -> int:
        """Slots for a sweep: the number it fixes, or under --parallel auto what the cluster's
        CPUs hold."""
        from seel.run import parallelism

        chosen, auto = parallelism(settings, plan)
        return self.slots(plan.engine.cpus_per_trial) if auto else chosen

    def runner(
        self,
        plan: Plan,
        run_dir: RunDir,
        run_id: str,
        emit: Callable[[Event], None],
        settings: RunSettings,
    ) -> RayRunner:
        """A runner factory for `run_sweep(runner=...)`."""
        from seel.ray.runner import RayRunner

        return RayRunner(
            self, plan, run_dir, run_id, emit, settings, self.slots_for(settings, plan)
        )

    def new_slot(self, plan: Plan) -> Any:
        """A new slot actor for `plan` (Ray places it on a node with room)."""
        import ray

        from seel.ray.worker import TrialWorker

        if self._plan is None or self._plan[0] is not plan:
            self._plan = (plan, ray.put(plan))
        worker = ray.remote(TrialWorker).options(
            num_cpus=plan.engine.cpus_per_trial, max_restarts=0, max_task_retries=0
        )
        return worker.remote(self._plan[1])

    def start_slots(self, plan: Plan, slots: int) -> None:
        """Start the sweep's slots now and wait (up to SLOT_START_TIMEOUT_S) until they are up.

        Each slot is a process that imports Ray and SEEL, about a CPU-second: done here, it is
        paid before the sweep starts rather than by its first trials. ClusterError if no slot can
        start at all (the error of the first).
        """
        import ray

        actors = [self.new_slot(plan) for _ in range(slots)]
        probes = [actor.ready.remote() for actor in actors]
        done, _ = ray.wait(probes, num_returns=len(probes), timeout=SLOT_START_TIMEOUT_S)
        errors: list[str] = []
        for actor, probe in zip(actors, probes, strict=True):
            if probe not in done:
                self._warm.append(actor)  # still starting (or waiting for room): joins later
                continue
            try:
                ray.get(probe)
            except ray.exceptions.RayError as exc:
                errors.append(_last_line(exc))
                ray.kill(actor, no_restart=True)
            else:
                self._warm.append(actor)
        if not self._warm:
            raise ClusterError(f"--ray {self.address}: no trial slot could start: {errors[0]}")

    def take_slots(self) -> list[Any]:
        """The slots started ahead (the runner's from now on)."""
        warm, self._warm = self._warm, []
        return warm

    def close(self) -> None:
        """Disconnect (slots not taken end with the connection); a local instance started for the
        sweep is stopped."""
        import ray

        for actor in self.take_slots():
            ray.kill(actor, no_restart=True)
        ray.shutdown()


def _ray_notices_to_stderr() -> None:
    """Ray's driver prints the cluster's error notices (a raylet that died, say) on stdout, which
    `--json` owns: send them to stderr, with the rest of what Ray has to say."""
    import ray._private.worker as ray_worker

    print_to_stdstream = ray_worker.print_to_stdstream
    if getattr(print_to_stdstream, "seel_stderr", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        print_to_stdstream({**data, "is_err": True}, ignore_prefix)

    to_stderr.seel_stderr = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = to_stderr


def connect(address: str, cpus_per_trial: float) -> Cluster:
    """Connect (or start a local instance) and check SEEL on every node; ClusterError if not."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray: Ray is not installed here: pip install 'seel[ray]'") from None
    _ray_notices_to_stderr()
    options: dict[str, Any] = {
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "configure_logging": False,
    }
    try:
        if address == "local":
            ray.init(
                address="local",  # a new instance, even if this machine has one running
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                object_store_memory=100 << 20,
                **options,
            )
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"--ray {address}: cannot connect: {exc}") from None
    try:
        nodes = _trial_nodes(ray.nodes(), cpus_per_trial)  # type: ignore[no-untyped-call]
        if not nodes:
            raise ClusterError(
                f"--ray {address}: no alive node has the {cpus_per_trial:g} CPU(s) a trial needs"
            )
        check_versions(nodes)
    except BaseException:
        ray.shutdown()
        raise
    return Cluster(address, nodes)


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _trial_nodes(nodes: list[dict[str, Any]], cpus_per_trial: float) -> list[Node]:
    return [
        Node(str(n["NodeID"]), str(n["NodeManagerAddress"]), float(n["Resources"].get("CPU", 0)))
        for n in nodes
        if n.get("Alive") and float(n.get("Resources", {}).get("CPU", 0)) >= cpus_per_trial
    ]


def check_versions(nodes: list[Node]) -> None:
    """Ask every node which SEEL it has; ClusterError naming the first that differs from ours."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_version_probe())
    refs = {
        node: probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)
        ).remote()
        for node in nodes
    }
    for node, ref in refs.items():
        try:
            version, error = ray.get(ref, timeout=PROBE_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise ClusterError(
                f"ray node {node.name}: did not answer within {PROBE_TIMEOUT_S:g} s"
            ) from None
        except ray.exceptions.RayError as exc:
            raise ClusterError(
                f"ray node {node.name}: cannot run SEEL's check: {_last_line(exc)}"
            ) from None
        if version is None:
            raise ClusterError(
                f"ray node {node.name}: SEEL is not installed there ({error}); "
                f"install seel {seel.__version__} on every node"
            )
        if version != seel.__version__:
            raise ClusterError(
                f"ray node {node.name}: has seel {version}, this controller has "
                f"{seel.__version__}; install the same version on every node"
            )
