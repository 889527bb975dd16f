"""One trial: an aggregator and its parties, spawned on ptys and driven through the lifecycle.

The engine's steps run in order; a phase's timeout covers all of its steps. Any process printing a
failure marker, or exiting before the stop phase, ends the trial at once with a status and the
phase it happened in; so does a halt from outside (an optimizer pruning the trial). Whatever happens, every child goes down the stop ladder before the outcome
is returned, and a cancelled trial returns an `interrupted` outcome after its cleanup.

An engine may also name commands of the trial (a run submission, a status query): each is started
by the first step that names it, and ending with 0 is not a crash. Their output and the
aggregator's are read for rounds (seel/rounds.py); a party whose config names a round to die at is
killed when that round starts, and the trial goes on without it.

With an engine that reuses its processes (`reuse:`, seel/deployments.py), a trial takes an idle
deployment whose key matches its own and starts at `reuse.from_phase`, or starts a fresh one; it
gives it back only when it ends ok with every process of it alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from seel.capacity import LoadMeter, with_usage
from seel.child import Child, ChildError, ChildExited, FailureSeen, Line, MarkerTimeout
from seel.context import Machine, TrialContext
from seel.deployments import Deployment, deployment_key
from seel.engine import Engine, Failure, Step
from seel.errors import PortUnavailable, SeelError, StorageError
from seel.events import DeploymentReused, Event, PartyState, PhaseReached, RoundFinished
from seel.jsoncheck import json_mismatch
from seel.outcome import Outcome, PartyResult, Status
from seel.reasons import trial_reason
from seel.rounds import RoundTracker
from seel.space import TrialSpec
from seel.store import storage_error
from seel.trialfiles import TrialFiles

_PARTY_STATE = {
    "init": "ready",
    "start": "started",
    "register": "registered",
    "eval": "evaluated",
    "stop": "stopped",
}


class Halted(SeelError):
    """The trial was ended from outside (an optimizer pruned it) with this status and reason."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def run_trial(
    ctx: TrialContext, trial: TrialSpec, attempt: int, halt: asyncio.Future[Halted] | None = None
) -> Outcome:
    """Run one trial to its outcome; never raises for anything the trial did.

    Setting `halt` ends the trial at once with its status and reason, down the stop ladder.
    With a meter, the outcome says what the trial used and how loaded the machine was.
    """
    if ctx.meter is None:
        return await _TrialRun(ctx, trial, attempt, halt).run()
    ctx.meter.trial_started(trial.trial_id)
    outcome = await _TrialRun(ctx, trial, attempt, halt).run()
    return with_usage(outcome, ctx.meter.trial_finished(trial.trial_id))


class LocalRunner:
    """Runs trials as processes of this machine (a Runner)."""

    def __init__(self, machine: Machine, emit: Callable[[Event], None]) -> None:
        self.machine = machine
        self.meter: LoadMeter | None = machine.meter
        self.ctx = machine.context(emit)
        self._halts: dict[str, asyncio.Future[Halted]] = {}

    async def run(self, trial: TrialSpec, attempt: int) -> Outcome:
        halt: asyncio.Future[Halted] = asyncio.get_running_loop().create_future()
        self._halts[trial.trial_id] = halt
        try:
            return await run_trial(self.ctx, trial, attempt, halt)
        finally:
            del self._halts[trial.trial_id]

    def stop(self, trial_id: str, status: Status, reason: str) -> None:
        """End a running trial from outside with this status; nothing if it is not running."""
        halt = self._halts.get(trial_id)
        if halt is not None and not halt.done():
            halt.set_result(Halted(status, reason))

    async def aclose(self) -> None:
        await self.machine.aclose()


class _TrialRun:
    def __init__(
        self,
        ctx: TrialContext,
        trial: TrialSpec,
        attempt: int,
        halt: asyncio.Future[Halted] | None,
    ) -> None:
        self.ctx = ctx
        self.engine: Engine = ctx.engine
        self.trial = trial
        self.attempt = attempt
        self.halt = halt if halt is not None else asyncio.get_running_loop().create_future()
        self.dir = ctx.trial_dir(trial.trial_id)
        self.children: list[Child] = []
        self.aggregator: Child | None = None
        self.parties: list[Child] = []
        self.commands: dict[str, Child] = {}  # the engine's commands, started by their steps
        self.files: TrialFiles | None = None
        self.round_tracker = RoundTracker(self.engine)
        self.kill_at: dict[Child, int] = {}  # processes to kill when a round starts (faults)
        self.killed: set[Child] = set()
        self.ports: list[int] = []
        # the processes it runs on when they are kept between trials, and the trial that started them
        self.deployment: Deployment | None = None
        self.deployment_of: str | None = None
        self._exit_hooks: dict[Child, Callable[[asyncio.Future[int | None]], None]] = {}
        self.t0 = time.monotonic()
        self.durations: dict[str, float] = {}
        self.phase: str | None = None
        self.stopping = False
        self.rounds = 0
        self.accuracies: list[float] = []
        self.metrics: dict[int, dict[str, float]] = {}
        self.failure: asyncio.Future[ChildError] = asyncio.get_running_loop().create_future()
        self._failures: dict[str, Failure] = {f.marker: f for f in self.engine.failures}
        self._priority = {f.marker: i for i, f in enumerate(self.engine.failures)}
        self._watch = [m for step in self.engine.lifecycle for m in step.expect] + [
            self.engine.metrics_pattern,
            *(step.capture for step in self.engine.lifecycle if step.capture is not None),
        ]

    # -- watching output ------------------------------------------------------------------

    def _on_line(self, child: Child, line: Line) -> None:
        if child.failure is not None and not self.failure.done():
            self.failure.set_result(child.failure)
        if child not in self.parties:  # the aggregator, or a command that streams its log
            said = self.round_tracker.feed(line.text)
            self._inject_faults()
            if said is not None:
                self.rounds += 1
                if said.accuracy is not None:
                    self.accuracies.append(said.accuracy)
                self.ctx.emit(
                    RoundFinished(self.trial.trial_id, said.round, said.accuracy, said.rounds)
                )
        else:
            metrics = self.engine.metrics_line(line.text)
            if metrics is not None:
                self.metrics[self.parties.index(child)] = metrics

    def _inject_faults(self) -> None:
        for child, round_ in list(self.kill_at.items()):
            if self.round_tracker.started >= round_:
                del self.kill_at[child]
                self.killed.add(child)
                child.kill()

    def _on_exit(self, child: Child) -> None:
        if self.stopping or self.failure.done() or child in self.killed:
            return
        if child.exit_code == 0 and child in self.commands.values():
            return  # a command ends by itself; a step that waits on it sees how
        self.failure.set_result(
            child.failure or ChildExited(child.name, child.exit_code, child.tail())
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def _spawn(self, name: str, argv: list[str], cwd: Path) -> Child:
        child = await Child.start(
            name,
            argv,
            cwd=cwd,
            env=self.files.env(self.ctx.env) if self.files is not None else self.ctx.env,
            strip_ansi=self.engine.strip_ansi,
            tree=self.engine.stop_tree,
            forkserver=await self.ctx.forkserver(),
            transcript=self.dir / f"{name}.log",
            failure_markers=list(self._failures),
            on_line=self._on_line,
            watch=self._watch,
        )
        self.children.append(child)
        self.ctx.processes.spawned(self.trial.trial_id, name, child.pid, child.pgid)
        if self.ctx.meter is not None:
            self.ctx.meter.spawned(self.trial.trial_id, child.pid)
        self._watch_exit(child)
        return child

    def _watch_exit(self, child: Child) -> None:
        self._exit_hooks[child] = hook = lambda _: self._on_exit(child)
        child.exited.add_done_callback(hook)

    def _adopt(self, deployment: Deployment) -> None:
        """Take over the processes of a deployment: their lines and transcripts are this trial's."""
        self.aggregator, self.parties = deployment.aggregator, list(deployment.parties)
        tid = self.trial.trial_id
        for child in deployment.children:
            child.switch(
                self.dir / f"{child.name}.log",
                self._on_line,
                f"serving trial {tid} from here on (the deployment trial {deployment.founder}"
                f" started, pid {child.pid})",
            )
            self.children.append(child)
            self._watch_exit(child)
            if self.ctx.meter is not None:
                self.ctx.meter.adopted(tid, child.pid)
        self.ctx.emit(DeploymentReused(tid, deployment.founder))

    async def _step(self, step: Step, marks: dict[Child, int], deadline: float) -> None:
        assert self.aggregator is not None
        if step.process == "aggregator":
            targets = [self.aggregator]
        elif step.process == "parties":
            targets = [p for p in self.parties if p not in self.killed]
        else:
            targets = [await self._command(step.process)]
            marks.setdefault(targets[0], 1)
        if step.send is not None:
            for child in targets:
                child.send_line(step.send)
        remaining = max(0.0, deadline - time.monotonic())
        waits: list[Any] = []
        for child in targets:
            mine: list[Awaitable[Any]] = [
                child.expect(m, remaining, since=marks[child]) for m in step.expect
            ]
            if step.expect_metrics:
                mine.append(
                    child.expect(self.engine.metrics_pattern, remaining, since=marks[child])
                )
            if step.capture is not None:
                mine.append(self._capture(child, step.capture, remaining, marks[child]))
            if step.expect_exit or step.expect_json:
                mine.append(self._expect_exit(child, remaining, step.expect_json))
            waits.append(
                self._party_done(child, step.phase, mine)
                if child in self.parties
                else asyncio.gather(*mine)
            )
        gathered: asyncio.Future[Any] = asyncio.gather(*waits)
        racing: set[asyncio.Future[Any]] = {gathered, self.failure, self.halt}
        finished_first = False
        try:
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            finished_first = gathered.done()
        finally:
            if not gathered.done():  # a child failed first, or the trial was cancelled
                gathered.cancel()
                await asyncio.gather(gathered, return_exceptions=True)
        if not finished_first:
            raise self.failure.result() if self.failure.done() else self.halt.result()
        gathered.result()

    async def _party_done(self, child: Child, phase: str, waits: list[Any]) -> None:
        await asyncio.gather(*waits)
        state = _PARTY_STATE.get(phase, phase)
        self.ctx.emit(PartyState(self.trial.trial_id, self.parties.index(child), state))

    async def _expect_exit(
        self, child: Child, timeout_s: float, expect_json: tuple[tuple[str, str], ...] = ()
    ) -> None:
        if not await child.wait_exit(timeout_s):
            raise MarkerTimeout(child.name, "process exit", timeout_s, child.tail())
        if child.exit_code != 0:  # leaving by itself, as asked, but not cleanly: a crash
            raise ChildExited(child.name, child.exit_code, child.tail())
        if expect_json:
            problem = json_mismatch(child.tail(child.tail_lines), expect_json)
            if problem is not None:
                raise FailureSeen(child.name, "expect_json", problem, child.tail())

    async def _capture(self, child: Child, pattern: Any, timeout_s: float, since: int) -> None:
        """Wait for a line matching `pattern`; its named groups become the trial's variables."""
        line = await child.expect(pattern, timeout_s, since=since)
        match = pattern.search(line.text)
        assert self.files is not None and match is not None
        self.files.variables.update({k: v for k, v in match.groupdict().items() if v is not None})

    async def _command(self, name: str) -> Child:
        """The engine's command `name`, started on first use (in the trial directory)."""
        if name not in self.commands:
            assert self.files is not None
            argv = self.files.argv(self.engine.commands[name], None)
            self.commands[name] = await self._spawn(name, argv, self.dir)
        return self.commands[name]

    async def _lifecycle(self) -> None:
        plan, pool, tid = self.ctx.plan, self.ctx.deployments, self.trial.trial_id
        key = deployment_key(plan, self.trial) if pool is not None else None
        taken = pool.take(key, tid) if pool is not None and key is not None else None
        if taken is not None:
            self.deployment, self.deployment_of = taken, taken.founder
            self.ports = list(taken.ports)
        else:
            if pool is not None:
                pool.make_room()
                self.deployment_of = tid
            self.ports = await asyncio.to_thread(
                self.ctx.ports.reserve, 1 + plan.parties_of(self.trial)
            )
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            agg_cfg, party_cfgs = plan.write_configs(self.trial, self.ports, self.dir)
        except OSError as exc:  # the run directory's fault, not the trial's: not a result
            raise storage_error(exc, self.dir) from None
        self.files = files = TrialFiles(self.engine, self.dir, [agg_cfg, *party_cfgs])
        files.prepare()
        if taken is not None:
            self._adopt(taken)
        else:
            await self._spawn_deployment(agg_cfg, party_cfgs)
        if pool is not None and key is not None and taken is None:
            assert self.aggregator is not None
            self.deployment = pool.founded(key, tid, self.aggregator, self.parties, self.ports)
        assert self.aggregator is not None
        procs = [(self.aggregator, self.engine.aggregator)]
        procs += [(p, self.engine.party) for p in self.parties]
        for index, (child, proc) in enumerate(procs):
            if proc.kill_at_round_key is not None:
                round_ = files.value(index, proc.kill_at_round_key)
                if isinstance(round_, int) and round_ > 0:
                    self.kill_at[child] = round_
        # On a reused deployment, lines count from now: what it printed before is not this trial's.
        marks = {c: c.mark() for c in self.children} if taken is not None else {}
        phase_start = deadline = 0.0
        for step in self.engine.lifecycle_from(taken is not None):
            if step.phase != self.phase:
                now = time.monotonic()
                if self.phase is not None:
                    self.durations[self.phase] = now - phase_start
                self.phase, phase_start = step.phase, now
                deadline = now + self.engine.timeouts[step.phase]
                self.stopping = step.phase == "stop"
                # Lines count from the phase's start, the first phase's from each spawn: a child
                # may print its first marker while the next one is being started.
                marks = {c: c.mark() if marks else 1 for c in self.children}
                self.ctx.emit(
                    PhaseReached(self.trial.trial_id, step.process, step.phase, now - self.t0)
                )
            await self._step(step, marks, deadline)
        if self.phase is not None:
            self.durations[self.phase] = time.monotonic() - phase_start

    async def _spawn_deployment(self, agg_cfg: Path, party_cfgs: list[Path]) -> None:
        assert self.files is not None
        files, plan = self.files, self.ctx.plan
        cwd = self.dir if self.engine.cwd == "trial" else plan.config_cwd()
        self.aggregator = await self._spawn(
            "aggregator", files.argv(self.engine.argv(self.engine.aggregator, str(agg_cfg)), 0), cwd
        )
        for i, cfg in enumerate(party_cfgs):
            argv = files.argv(self.engine.argv(self.engine.party, str(cfg)), 1 + i)
            self.parties.append(await self._spawn(f"party{i}", argv, cwd))

    # -- stopping -------------------------------------------------------------------------

    async def _stop_all(self, hurry: bool, keep: bool = False) -> None:
        """Every process down the stop ladder; with `keep`, those of its deployment go back to the
        pool instead, if they are all alive and none was killed as a fault."""
        self.stopping = True
        deployment, pool = self.deployment, self.ctx.deployments
        keep = (
            keep
            and deployment is not None
            and pool is not None
            and deployment.healthy()
            and not self.killed
        )
        kept = set(deployment.children) if keep and deployment is not None else set()
        eng = self.engine
        grace = self.ctx.stop_grace_s if self.ctx.stop_grace_s is not None else eng.stop_grace_s
        term = eng.stop_term_grace_s
        if hurry:
            grace, term = min(grace, 1.0), min(term, 1.0)

        def line(child: Child) -> str | None:
            if child is self.aggregator:
                return eng.aggregator.stop_line
            return eng.party.stop_line if child in self.parties else None

        stopping = [c for c in self.children if c not in kept]
        await asyncio.gather(*(c.stop(line(c), grace, term) for c in stopping))
        if self.ctx.meter is not None:  # a forked child is a zombie until closed: all its CPU
            self.ctx.meter.measure(self.trial.trial_id)
        for child in stopping:
            child.close()
            self.ctx.processes.reaped(child.pid)
        if deployment is not None and pool is not None:
            if kept:
                for child in kept:
                    child.exited.remove_done_callback(self._exit_hooks[child])
                pool.give_back(deployment)
                return
            pool.discard(deployment)
        if self.ports:
            await asyncio.to_thread(self.ctx.ports.release, self.ports)

    # -- the whole trial ------------------------------------------------------------------

    async def run(self) -> Outcome:
        status, reason, retryable = Status.OK, "", False
        failing: str | None = None  # the process whose output explains the end
        started_at = time.time()
        try:
            await self._lifecycle()
        except asyncio.CancelledError:
            status, reason = Status.INTERRUPTED, "the sweep was interrupted"
        except StorageError:
            await self._shielded_cleanup(hurry=True)
            raise
        except Halted as exc:
            status, reason = exc.status, exc.reason
        except MarkerTimeout as exc:
            phase_timeout = self.engine.timeouts.get(self.phase or "", 0.0)
            status = Status.TIMEOUT
            reason = f"{exc.child}: {exc.marker!r} not seen within the {self.phase} timeout of {phase_timeout:g} s"
        except FailureSeen as exc:
            status, reason, failing = Status.FAILED, str(exc), exc.child
        except ChildExited as exc:
            status, reason, failing = Status.CRASHED, str(exc), exc.child
        except PortUnavailable as exc:
            status, reason, retryable = Status.FAILED, str(exc), True
        except (SeelError, OSError) as exc:
            status, reason = Status.FAILED, f"{type(exc).__name__}: {exc}"
        if status is not Status.OK and self.phase is not None and self.phase not in self.durations:
            self.durations[self.phase] = time.monotonic() - self.t0 - sum(self.durations.values())
        await self._shielded_cleanup(hurry=status is Status.INTERRUPTED, keep=status is Status.OK)
        with contextlib.suppress(OSError):
            self.round_tracker.write(self.dir / "rounds.jsonl")
        if failing is not None:
            status, reason, retryable = self._classify(failing, status, reason)
        return Outcome(
            trial_id=self.trial.trial_id,
            index=self.trial.index,
            params=dict(self.trial.params),
            repeat=self.trial.repeat,
            seed=self.trial.seed,
            status=status,
            phase=None if status is Status.OK else self.phase,
            reason=reason,
            attempts=self.attempt,
            started_at=started_at,
            elapsed_s=time.monotonic() - self.t0,
            durations=dict(self.durations),
            rounds_completed=self.rounds if self.engine.round_pattern is not None else None,
            round_accuracies=tuple(self.accuracies),
            aggregator_exit=self.aggregator.exit_code if self.aggregator else None,
            parties=tuple(
                PartyResult(i, c.exit_code, self.metrics.get(i, {}))
                for i, c in enumerate(self.parties)
            ),
            ports=tuple(self.ports),
            retryable=retryable,
            deployment=self.deployment_of,
        )

    def _classify(self, failing: str, status: Status, reason: str) -> tuple[Status, str, bool]:
        """Status and reason of a trial a child ended, once every child's output is in.

        The status comes from the most telling failure marker seen (their order in the engine:
        IBM FL prints "Traceback" before "Address already in use"); the reason is the first
        error of the process that printed it, else that marker's line.
        """
        retryable = False
        seen = [f for c in self.children for f in c.failures if f.marker in self._priority]
        if seen:
            first = min(seen, key=lambda f: self._priority[f.marker])
            failure = self._failures[first.marker]
            status, retryable, reason = Status(failure.status), failure.retry, str(first)
            failing = first.child
        cause = next((c.first_error for c in self.children if c.name == failing), None)
        return status, trial_reason(failing, cause, reason), retryable

    async def _shielded_cleanup(self, hurry: bool, keep: bool = False) -> None:
        cleanup = asyncio.ensure_future(self._stop_all(hurry, keep))
        while not cleanup.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(cleanup)
        cleanup.result()
