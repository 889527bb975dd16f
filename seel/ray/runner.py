"""RayRunner: the Runner that runs each trial on a slot of a Ray cluster.

A slot is one `TrialWorker` actor holding the CPUs one trial needs (`cpus_per_trial` in the
engine), placed by Ray on any node with room; a trial never spans nodes. The controller keeps
everything else: the ledger, the run directory, the search, the sinks. For each trial:

1. a free slot is taken (the scheduler never asks for more trials than there are slots);
2. the slot's `run` streams the trial's events, which go to the controller's sinks as they come;
3. the trial directory arrives packed, and is unpacked into the controller's run directory;
4. the outcome arrives last, with the node it ran on.

A slot whose actor or node is lost (any Ray error on the stream) ends its trial as an
infrastructure failure (`failed`, retryable): the scheduler runs it again, on whatever slot is free
next, and records only that attempt's outcome. The lost slot is replaced by a new actor, which Ray
places on a node with room (so is one that dies while it starts, after a pause that doubles with
each such death in a row); when no slot is alive and none comes free within `SLOT_WAIT_S`, the
run stops with one line (exit 1), and a resume runs what is left. Cancelling `run` (Ctrl-C) interrupts the trial on its node, where it
goes down the stop ladder, and still returns its `interrupted` outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayError

import seel
from seel.capacity import LoadMeter
from seel.errors import ClusterLost
from seel.events import Event, PhaseReached
from seel.outcome import Outcome, Status
from seel.plan import Plan
from seel.ray.transfer import Unpacker
from seel.space import TrialSpec

if TYPE_CHECKING:
    from seel.ray.cluster import Cluster
    from seel.run import RunSettings
    from seel.store import RunDir

_INTERRUPT_MARGIN_S = 10.0  # beyond the stop ladder, for the outcome of an interrupted trial
_SILENT_RETRIES = 3  # slots found dead before a trial started on them, passed over
RESTART_FIRST_S, RESTART_MAX_S = 1.0, 30.0  # pause before replacing a slot that died starting
SLOT_WAIT_S = 300.0  # a trial waits this long for a slot when none is alive, then the run stops


class _Slot:
    def __init__(self, actor: Any, node: str) -> None:
        self.actor = actor
        self.node = node
        self.lost = False


class RayRunner:
    """Runs trials on slots of a Ray cluster (a Runner)."""

    meter: LoadMeter | None = None  # the trials run on the cluster's nodes, each measuring its own

    def __init__(
        self,
        cluster: Cluster,
        plan: Plan,
        run_dir: RunDir,
        run_id: str,
        emit: Callable[[Event], None],
        settings: RunSettings,
        slots: int,
        slot_wait_s: float = SLOT_WAIT_S,
    ) -> None:
        self.cluster = cluster
        self.slot_wait_s = slot_wait_s
        self.plan = plan
        self.run_dir = run_dir
        self.emit = emit
        engine = plan.engine
        self._stop_budget_s = engine.stop_grace_s + engine.stop_term_grace_s + _INTERRUPT_MARGIN_S
        self._begin = (
            run_id,
            settings.port_range or plan.spec.port_range,
            str(settings.ports_dir) if settings.ports_dir else None,
        )
        self._free: asyncio.Queue[_Slot] = asyncio.Queue()
        self._starting: set[asyncio.Task[None]] = set()
        self._slots: list[_Slot] = []
        self._running: dict[str, _Slot] = {}
        self._closed = False
        self._start_failures = 0  # slots in a row that died while they started
        self._restarts: set[asyncio.TimerHandle] = set()  # their replacements, not yet asked for
        warm = cluster.take_slots()
        for actor in warm[:slots]:
            self._start(actor)
        for actor in warm[slots:]:
            ray.kill(actor, no_restart=True)
        for _ in range(slots - len(warm)):
            self._add_slot()

    # -- slots --------------------------------------------------------------------------------

    def _add_slot(self) -> None:
        if not self._closed:
            self._start(self.cluster.new_slot(self.plan))

    def _start(self, actor: Any) -> None:
        task = asyncio.ensure_future(self._start_slot(actor))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _start_slot(self, actor: Any) -> None:
        try:
            node, version = await actor.begin.remote(*self._begin)
        except (RayError, asyncio.CancelledError) as exc:  # it could not start, or is not needed
            with contextlib.suppress(RayError):
                ray.kill(actor, no_restart=True)
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._replace_later()
            return
        self._start_failures = 0
        if version != seel.__version__:  # a node that joined after the check
            ray.kill(actor, no_restart=True)
            return
        slot = _Slot(actor, node)
        self._slots.append(slot)
        self._free.put_nowait(slot)

    def _replace_later(self) -> None:
        """Ask for another slot in place of one that died while it started (its node went, or its
        actor failed to come up there), after a pause that doubles with each such death in a row:
        a node that kills every slot placed on it is not asked again at once."""
        delay = min(RESTART_MAX_S, RESTART_FIRST_S * 2**self._start_failures)
        self._start_failures += 1

        def replace() -> None:
            self._restarts.discard(handle)
            self._add_slot()

        handle = asyncio.get_running_loop().call_later(delay, replace)
        self._restarts.add(handle)

    def _drop(self, slot: _Slot) -> None:
        slot.lost = True
        with contextlib.suppress(RayError):
            ray.kill(slot.actor, no_restart=True)
        if slot in self._slots:
            self._slots.remove(slot)
        self._add_slot()

    # -- the Runner protocol ------------------------------------------------------------------

    async def run(self, trial: TrialSpec, attempt: int) -> Outcome:
        """Run one trial on the next free slot; never raises for anything the trial did.

        A slot found dead before the trial said anything (its node went while it was idle) is
        replaced and the trial goes to the next free slot, without counting an attempt: up to
        _SILENT_RETRIES times, then that failure is the trial's outcome.
        """
        for tries in range(_SILENT_RETRIES + 1):
            slot = await self._take_slot()
            self._running[trial.trial_id] = slot
            stream = asyncio.ensure_future(self._stream(slot, trial, attempt))
            try:
                outcome, heard = await self._until_done(slot, trial, attempt, stream)
            finally:
                del self._running[trial.trial_id]
                if slot.lost:
                    self._drop(slot)
                else:
                    self._free.put_nowait(slot)
            if heard or not slot.lost or tries == _SILENT_RETRIES:
                return outcome
        raise AssertionError("unreachable")

    async def _take_slot(self) -> _Slot:
        """The next free slot. ClusterLost when none came free within slot_wait_s and none is
        alive: no node of the cluster can hold a trial (every one was lost, or none has the CPUs a
        trial needs), and the run stops rather than wait for ever; a resume runs what is left."""
        while True:
            try:
                async with asyncio.timeout(self.slot_wait_s):
                    return await self._free.get()
            except TimeoutError:
                if not self._slots:
                    cpus = self.plan.engine.cpus_per_trial
                    raise ClusterLost(
                        f"no Ray node could take a trial ({cpus:g} CPUs each) for "
                        f"{self.slot_wait_s:g} s, and none is left: every one was lost, or none "
                        "has room; run the same command again to resume once the cluster has"
                    ) from None

    def stop(self, trial_id: str, status: Status, reason: str) -> None:
        """End a running trial from outside with this status (on its node)."""
        slot = self._running.get(trial_id)
        if slot is not None and not slot.lost:
            slot.actor.stop.remote(trial_id, str(status), reason)

    async def aclose(self) -> None:
        """Stop every slot (its fork server, its files on the node) and release its actor."""
        self._closed = True
        for handle in self._restarts:
            handle.cancel()
        for task in list(self._starting):
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        slots, self._slots = self._slots, []
        closing = [s.actor.aclose.remote() for s in slots if not s.lost]
        with contextlib.suppress(RayError, TimeoutError):
            async with asyncio.timeout(self._stop_budget_s):
                await asyncio.gather(*closing, return_exceptions=True)
        for slot in slots:
            with contextlib.suppress(RayError):
                ray.kill(slot.actor, no_restart=True)

    # -- one trial ----------------------------------------------------------------------------

    async def _until_done(
        self,
        slot: _Slot,
        trial: TrialSpec,
        attempt: int,
        stream: asyncio.Future[tuple[Outcome, bool]],
    ) -> tuple[Outcome, bool]:
        """The stream's outcome; if cancelled, the trial is interrupted on its node first."""
        cancelled = False
        while not stream.done():
            try:
                await asyncio.shield(stream)
            except asyncio.CancelledError:
                if cancelled:
                    continue
                cancelled = True
                slot.actor.interrupt.remote(trial.trial_id)
                # The node answers with the interrupted outcome after the stop ladder; a node
                # that does not is given up on.
                asyncio.get_running_loop().call_later(self._stop_budget_s, stream.cancel)
        if stream.cancelled():
            slot.lost = True
            why = "did not answer the interrupt"
            return _lost(trial, attempt, slot.node, why, None, Status.INTERRUPTED), True
        outcome, heard = stream.result()
        if cancelled and outcome.retryable:  # lost while the sweep stops: run it on resume
            outcome = dataclasses.replace(outcome, status=Status.INTERRUPTED, retryable=False)
        return outcome, heard or cancelled

    async def _stream(self, slot: _Slot, trial: TrialSpec, attempt: int) -> tuple[Outcome, bool]:
        """The trial's outcome, and whether the node said anything of it."""
        started = time.time()
        heard = False
        phase: str | None = None
        unpacker = Unpacker(self.run_dir.path / "trials" / trial.trial_id)
        try:
            gen = slot.actor.run.options(num_returns="streaming").remote(trial, attempt)
            async for ref in gen:
                item = await ref
                heard = True
                if item[0] == "events":
                    for event in item[1]:
                        if isinstance(event, PhaseReached):
                            phase = event.phase
                        self.emit(event)
                elif item[0] == "dir":
                    unpacker.write(item[1])
                else:
                    outcome: Outcome = item[1]
                    unpacker.write(item[2])
                    await asyncio.to_thread(unpacker.finish)
                    return outcome, heard
            raise RuntimeError("the trial's stream ended without an outcome")
        except (RayError, RuntimeError) as exc:
            unpacker.discard()
            slot.lost = True
            outcome = _lost(trial, attempt, slot.node, _first_line(exc), phase)
            return _replace_started(outcome, started), heard
        except BaseException:
            unpacker.discard()
            raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".strip()


def _lost(
    trial: TrialSpec,
    attempt: int,
    node: str,
    why: str,
    phase: str | None,
    status: Status = Status.FAILED,
) -> Outcome:
    """The outcome of a trial whose node or actor went away: an infrastructure failure."""
    return Outcome(
        trial_id=trial.trial_id,
        index=trial.index,
        params=dict(trial.params),
        repeat=trial.repeat,
        seed=trial.seed,
        status=status,
        phase=phase,
        reason=f"ray node {node} lost: {why}",
        attempts=attempt,
        started_at=time.time(),
        elapsed_s=0.0,
        durations={},
        rounds_completed=None,
        round_accuracies=(),
        aggregator_exit=None,
        parties=(),
        ports=(),
        retryable=status is Status.FAILED,
        node=node,
    )


def _replace_started(outcome: Outcome, started: float) -> Outcome:
    return dataclasses.replace(outcome, started_at=started, elapsed_s=time.time() - started)
