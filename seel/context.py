"""What one trial needs, and what the machine it runs on owns.

A `TrialContext` is everything a trial uses: the plan that renders its configs (with the engine
and its phase timeouts), the environment of its processes, where its events go, where its ports
come from, where its files go, where its processes are recorded, and how they are started. It is
all a trial sees: the same trial code runs on the controller's machine or on a worker node.

A `Machine` is what one machine owns for a run and shares between its trials: the port registry,
the fork server, the process ledger and the folder of trial directories. The controller has one
for local trials; a worker node builds its own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from seel.capacity import LoadMeter
from seel.deployments import DeploymentPool
from seel.engine import Engine
from seel.events import Event
from seel.forkserver import ForkServer
from seel.plan import Plan
from seel.ports import PortAllocator
from seel.procs import RUN_ENV, ProcessLedger


@dataclass(frozen=True)
class TrialContext:
    """Everything one trial needs; nothing else of the run is reachable from a trial."""

    plan: Plan
    env: Mapping[str, str]
    emit: Callable[[Event], None]
    ports: PortAllocator
    trials_dir: Path
    processes: ProcessLedger
    forkserver: Callable[[], Awaitable[ForkServer | None]]
    stop_grace_s: float | None = None
    meter: LoadMeter | None = None  # measures each trial's processes and the machine's load
    deployments: DeploymentPool | None = None  # processes kept between trials (engine `reuse:`)

    @property
    def engine(self) -> Engine:
        return self.plan.engine

    def trial_dir(self, trial_id: str) -> Path:
        return self.trials_dir / trial_id


class Machine:
    """The port registry, fork server, process ledger and trial directories of one machine."""

    def __init__(
        self,
        plan: Plan,
        run_path: Path,
        run_id: str,
        processes: ProcessLedger,
        ports: PortAllocator,
        stop_grace_s: float | None = None,
    ) -> None:
        self.plan = plan
        self.run_path = run_path
        self.processes = processes
        self.ports = ports
        self.stop_grace_s = stop_grace_s
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            **plan.engine.env,
            RUN_ENV: run_id,
        }
        self._forkserver: asyncio.Future[ForkServer | None] | None = None
        self.meter = LoadMeter()
        self.deployments = (
            DeploymentPool(plan.engine, processes, ports, stop_grace_s)
            if plan.engine.reuse is not None
            else None
        )

    def context(self, emit: Callable[[Event], None]) -> TrialContext:
        """A context for trials on this machine whose events go to `emit`."""
        return TrialContext(
            plan=self.plan,
            env=self.env,
            emit=emit,
            ports=self.ports,
            trials_dir=self.run_path / "trials",
            processes=self.processes,
            forkserver=self.forkserver,
            stop_grace_s=self.stop_grace_s,
            meter=self.meter,
            deployments=self.deployments,
        )

    async def forkserver(self) -> ForkServer | None:
        """The run's fork server, started on first use, if the engine preloads modules.

        None if it has none or the server cannot start: processes are then spawned cold.
        """
        if not self.plan.engine.preloaded():
            return None
        if self._forkserver is None:
            self._forkserver = asyncio.ensure_future(self._start_forkserver())
        return await asyncio.shield(self._forkserver)

    async def _start_forkserver(self) -> ForkServer | None:
        engine = self.plan.engine
        log, optional = self.run_path / "forkserver.log", self.plan.named_modules()
        server = ForkServer(engine.python, engine.preload, self.env, log, optional)
        up = await server.start()
        if server.pid is None:
            return None
        self.processes.spawned("", "forkserver", server.pid, server.pid)
        if not up:  # it has already ended, and says why in its log
            self.processes.reaped(server.pid)
            return None
        return server

    async def aclose(self) -> None:
        """Stop what the machine keeps between trials (deployments, the fork server); close its
        ledger."""
        starting, self._forkserver = self._forkserver, None
        try:
            if self.deployments is not None:
                await self.deployments.aclose()
            await self.meter.aclose()
            if starting is None:
                return
            server = (await asyncio.gather(starting, return_exceptions=True))[0]
            if isinstance(server, ForkServer):
                await server.aclose()
                assert server.pid is not None
                self.processes.reaped(server.pid)
        finally:
            self.processes.close()
