"""The node's side: an actor that runs trials exactly as a local run does, one at a time.

A `TrialWorker` is one slot: Ray places it on a node with the CPUs one trial needs (it is started,
and imports SEEL, before the sweep begins: cluster.py), and `begin` builds what a machine owns for
the run there (a `Machine`: port registry, fork server, process ledger,
trial directories under the node's temporary directory). Each trial runs through `run_trial`, the
same code as on the controller's machine. Its processes get SEEL_DIE_WITH_PARENT=1, so they die
with this actor if Ray kills it (the driver or the node is gone; seel/lifeline.py).

`run` is a streaming generator. It yields, in order:
  ("events", [event, ...])   the trial's events, a batch at most every EVENT_BATCH_S
  ("dir", chunk)             the trial directory, packed (transfer.py), all but the last chunk
  ("end", outcome, chunk)    the outcome, with the node's name, and the last chunk
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import seel
from seel import lifeline
from seel.context import Machine
from seel.events import Event
from seel.outcome import Status
from seel.plan import Plan
from seel.ports import PortAllocator
from seel.procs import ProcessLedger
from seel.ray import transfer
from seel.space import TrialSpec
from seel.trial import Halted, run_trial

EVENT_BATCH_S = 0.2  # events of a trial go to the controller in batches at most this often


def node_name() -> str:
    """This node as the controller shows it: its address and the start of its Ray node id."""
    import ray

    context = ray.get_runtime_context()
    address = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    return f"{address}/{context.get_node_id()[:8]}"


def _remove_orphans(root: Path) -> None:
    """Delete what slots killed outright (with their controller or by Ray) left on this node:
    folders `RUNID-PID` whose PID is no longer running."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for entry in entries:
        pid = entry.name.rpartition("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(entry, ignore_errors=True)


class TrialWorker:
    """One slot on one node; made a Ray actor by the runner (`ray.remote(TrialWorker)`).

    Every method is a coroutine: Ray runs them all on the actor's event loop, where the trial's
    tasks and futures live (a plain method would run on another thread).
    """

    def __init__(self, plan: Plan, base_dir: str | None = None) -> None:
        self.plan = plan
        self.node = node_name()
        self.root = Path(base_dir) if base_dir else Path(tempfile.gettempdir()) / "seel-ray"
        _remove_orphans(self.root)
        self.machine: Machine | None = None
        self._halts: dict[str, asyncio.Future[Halted]] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._interrupted: set[str] = set()  # interrupted before their run began here

    async def ready(self) -> tuple[str, str]:
        """(this node's name, the SEEL version installed here)."""
        return self.node, seel.__version__

    async def begin(
        self, run_id: str, port_range: tuple[int, int] | None, ports_dir: str | None
    ) -> tuple[str, str]:
        """Build what this node owns for the run (once); then as `ready`."""
        if self.machine is None:
            path = self.root / f"{run_id}-{os.getpid()}"
            (path / "trials").mkdir(parents=True, exist_ok=True)
            ports = PortAllocator(port_range, Path(ports_dir) if ports_dir else None)
            # Its processes die with this actor (lifeline), and no resume runs here: no ledger.
            self.machine = Machine(self.plan, path, run_id, ProcessLedger(None), ports)
            self.machine.env[lifeline.ENV] = "1"
        return await self.ready()

    async def run(self, trial: TrialSpec, attempt: int) -> AsyncIterator[tuple[Any, ...]]:
        """Run one trial; see the module's docstring for what is yielded."""
        batch: list[Event] = []
        assert self.machine is not None, "begin() first"
        machine = self.machine
        ctx = machine.context(batch.append)
        halt: asyncio.Future[Halted] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(run_trial(ctx, trial, attempt, halt))
        self._halts[trial.trial_id], self._tasks[trial.trial_id] = halt, task
        if trial.trial_id in self._interrupted:
            self._interrupted.discard(trial.trial_id)
            # once the trial has begun, so that it ends with its interrupted outcome
            asyncio.get_running_loop().call_soon(task.cancel)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=EVENT_BATCH_S)  # what came meanwhile: a batch
                if batch:
                    # taken before the yield: the trial goes on while the controller reads it
                    sent = batch[:]
                    batch.clear()
                    yield ("events", sent)
            if batch:  # what the trial emitted while its last batch was being read
                yield ("events", batch[:])
            outcome = dataclasses.replace(task.result(), node=self.node)
        finally:
            del self._halts[trial.trial_id], self._tasks[trial.trial_id]
            if not task.done():  # the controller went away mid-trial: stop it here
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        trial_dir = ctx.trial_dir(trial.trial_id)
        last = b""
        packed = await asyncio.to_thread(transfer.pack, trial_dir)  # up to 64 MB per transcript
        for chunk in transfer.chunks(packed):
            if last:
                yield ("dir", last)
            last = chunk
        if machine.deployments is None or not machine.deployments.in_use(trial.trial_id):
            transfer.remove(trial_dir)  # else the processes it started still use it: at aclose
        yield ("end", outcome, last)

    async def stop(self, trial_id: str, status: str, reason: str) -> None:
        """End a running trial from outside (an optimizer pruned it) with this status."""
        halt = self._halts.get(trial_id)
        if halt is not None and not halt.done():
            halt.set_result(Halted(Status(status), reason))

    async def interrupt(self, trial_id: str) -> None:
        """Stop a running trial as Ctrl-C does on one machine: it ends `interrupted`."""
        task = self._tasks.get(trial_id)
        if task is not None:
            task.cancel()
        else:  # the interrupt overtook the trial's start
            self._interrupted.add(trial_id)

    async def aclose(self) -> None:
        """Stop the fork server and delete this slot's files on the node."""
        if self.machine is None:
            return
        await self.machine.aclose()  # which closes its process ledger too
        shutil.rmtree(self.machine.run_path, ignore_errors=True)
