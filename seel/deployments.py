"""Deployments kept between trials: an aggregator and its parties that serve one trial after
another, for engines with `reuse:` (seel/engine.py, read by seel/enginefile.py).

A deployment is the aggregator and party processes one trial started (its founder), the ports
they hold, and its key: the trial's swept values outside the engine's `reuse.when_only` keys, with
its repeat and seed. A later trial with the same key may take it while it is idle, one trial at a
time; that trial writes its configs with the deployment's ports and starts at `reuse.from_phase`.

1. Only a trial that ends `ok` with every process of its deployment alive gives it back; any
   other end stops the whole deployment down the stop ladder (the trial does that, as for its
   own processes).
2. A process of an idle deployment that ends, or prints a failure marker, discards the whole
   deployment.
3. Idle deployments are bounded: when a trial must start a fresh one, the least recently used idle
   ones are stopped until the busy and idle deployments together, the new one counted, are at most
   one more than the most this machine has had busy at once. A sweep that runs one trial at a
   time keeps one idle deployment beside the one in use; one that ran four at once keeps up to
   five in all.
4. Every idle deployment is stopped when the machine closes (the end of the run, Ctrl-C); its
   processes are in the process ledger under their founder, so a resume stops what a dead
   controller left of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from seel.child import Child
from seel.engine import Engine
from seel.plan import Plan
from seel.ports import PortAllocator
from seel.procs import ProcessLedger
from seel.space import TrialSpec


def deployment_key(plan: Plan, trial: TrialSpec) -> str | None:
    """What a deployment for `trial` must share with it: its swept values outside the engine's
    `reuse.when_only` keys, its repeat and seed. None when the engine reuses nothing."""
    reuse = plan.engine.reuse
    if reuse is None:
        return None
    targets = {param.name: param.target for param in plan.spec.parameters}
    kept: dict[str, Any] = {}
    for name, value in trial.params.items():
        target = targets.get(name)
        if target is not None and target.process == "aggregator":
            path = target.path
            if any(path == key or path.startswith(key + ".") for key in reuse.when_only):
                continue
        kept[name] = value
    doc = {"params": kept, "repeat": trial.repeat, "seed": trial.seed}
    return json.dumps(doc, sort_keys=True, default=repr)


class Deployment:
    """An aggregator and its parties, started by trial `founder`, and the ports they hold."""

    def __init__(
        self, key: str, founder: str, aggregator: Child, parties: Sequence[Child], ports: list[int]
    ) -> None:
        self.key = key
        self.founder = founder
        self.aggregator = aggregator
        self.parties = list(parties)
        self.ports = list(ports)
        self.holder: str | None = founder  # the trial it serves; None while idle
        self.last_used = time.monotonic()
        self.exit_watch: Callable[[asyncio.Future[int | None]], None] | None = None

    @property
    def children(self) -> list[Child]:
        return [self.aggregator, *self.parties]

    def healthy(self) -> bool:
        """Every process is running and has printed no failure marker."""
        return all(not c.exited.done() and c.failure is None for c in self.children)


class DeploymentPool:
    """The deployments of one machine: those serving a trial and the idle ones (see the module)."""

    def __init__(
        self,
        engine: Engine,
        processes: ProcessLedger,
        ports: PortAllocator,
        stop_grace_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.processes = processes
        self.ports = ports
        self.stop_grace_s = stop_grace_s
        self.busy: list[Deployment] = []
        self.idle: list[Deployment] = []  # least recently used first
        self.peak_busy = 0
        self.stopped: list[tuple[str, str]] = []  # (founder, why) of each deployment it stopped
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- what trials do -------------------------------------------------------------------

    def take(self, key: str, trial_id: str) -> Deployment | None:
        """An idle healthy deployment with this key, now serving `trial_id`; None if none."""
        for deployment in reversed(self.idle):
            if deployment.key == key and deployment.healthy():
                self.idle.remove(deployment)
                self._unwatch(deployment)
                deployment.holder = trial_id
                self._busy(deployment)
                return deployment
        return None

    def make_room(self) -> None:
        """Before a fresh deployment starts: stop the least recently used idle ones beyond the
        bound (rule 3 of the module)."""
        running = len(self.busy) + 1
        self.peak_busy = max(self.peak_busy, running)
        while self.idle and running + len(self.idle) > self.peak_busy + 1:
            self._stop_later(self.idle.pop(0), "evicted: a fresh deployment needed the room")

    def founded(
        self, key: str, trial_id: str, aggregator: Child, parties: Sequence[Child], ports: list[int]
    ) -> Deployment:
        """The processes trial `trial_id` started, now a deployment serving it."""
        deployment = Deployment(key, trial_id, aggregator, parties, ports)
        self._busy(deployment)
        return deployment

    def give_back(self, deployment: Deployment) -> None:
        """The trial it served ended ok with it healthy: idle until a trial with its key comes."""
        self.busy.remove(deployment)
        last, deployment.holder = deployment.holder, None
        deployment.last_used = time.monotonic()
        for child in deployment.children:
            child.switch(
                None, None, f"idle after trial {last} (deployment of {deployment.founder})"
            )
        if self._closed or not deployment.healthy():
            self._stop_later(deployment, "not healthy when given back")
            return
        self.idle.append(deployment)
        self._watch(deployment)

    def discard(self, deployment: Deployment) -> None:
        """The trial it served stopped it (any end but a healthy ok)."""
        if deployment in self.busy:
            self.busy.remove(deployment)
        self.stopped.append((deployment.founder, f"stopped with trial {deployment.holder}"))

    def in_use(self, trial_id: str) -> bool:
        """Whether a deployment trial `trial_id` started is still up: its processes use files
        in that trial's directory (its FLWR_HOME), which must stay until the run ends."""
        return any(d.founder == trial_id for d in (*self.busy, *self.idle))

    # -- idle deployments -----------------------------------------------------------------

    def _busy(self, deployment: Deployment) -> None:
        self.busy.append(deployment)
        self.peak_busy = max(self.peak_busy, len(self.busy))

    def _watch(self, deployment: Deployment) -> None:
        def ended(_: asyncio.Future[int | None]) -> None:
            if deployment in self.idle:
                self.idle.remove(deployment)
                self._stop_later(deployment, "a process ended while idle")

        deployment.exit_watch = ended
        for child in deployment.children:
            child.exited.add_done_callback(ended)

    def _unwatch(self, deployment: Deployment) -> None:
        if deployment.exit_watch is not None:
            for child in deployment.children:
                child.exited.remove_done_callback(deployment.exit_watch)
            deployment.exit_watch = None

    def _stop_later(self, deployment: Deployment, why: str) -> None:
        self._unwatch(deployment)
        self.stopped.append((deployment.founder, why))
        for child in deployment.children:
            child.switch(None, None, f"stopping the deployment of {deployment.founder}: {why}")
        task = asyncio.ensure_future(self._stop(deployment))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop(self, deployment: Deployment) -> None:
        """The stop ladder for every process of an idle deployment, then its ports."""
        eng = self.engine
        grace = self.stop_grace_s if self.stop_grace_s is not None else eng.stop_grace_s

        async def stop(child: Child, line: str | None) -> None:
            await child.stop(line, grace, eng.stop_term_grace_s)
            child.close()
            self.processes.reaped(child.pid)

        await asyncio.gather(
            stop(deployment.aggregator, eng.aggregator.stop_line),
            *(stop(p, eng.party.stop_line) for p in deployment.parties),
        )
        await asyncio.to_thread(self.ports.release, deployment.ports)

    async def aclose(self) -> None:
        """Stop every idle deployment, and wait for those being stopped (shielded)."""
        self._closed = True
        while self.idle:
            self._stop_later(self.idle.pop(0), "the run ended")
        while self._stopping:
            tasks = list(self._stopping)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
            self._stopping.difference_update(t for t in tasks if t.done())
