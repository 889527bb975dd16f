"""Running a sweep: check everything, open (or resume) the run directory, schedule, compact.

This is the library entry point the CLI calls; it knows nothing of terminals or output formats.
Where trials come from and where they run are arguments: `run_sweep(..., source=, runner=)` takes
a factory for each, so the grid and local processes are defaults, not assumptions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from seel.capacity import AutoParallel, LoadMeter
from seel.context import Machine
from seel.enginefile import load_engine
from seel.events import Event, Sink, SweepFinished, SweepStarted, isolated
from seel.failfast import FailFast
from seel.grid import GridSource
from seel.manifest import RunManifest
from seel.plan import Plan
from seel.ports import PortAllocator
from seel.procs import ProcessLedger
from seel.scheduler import Runner, Scheduler, Tally, TrialSource
from seel.store import RunDir
from seel.sweep import SweepSpec, load_sweep
from seel.trial import LocalRunner


@dataclass(frozen=True)
class RunSettings:
    """What the user asked for on the command line."""

    sweep: Path
    overrides: tuple[str, ...] = ()
    out: Path | None = None
    parallel: int | Literal["auto"] | None = None  # None: the sweep's `parallel:`, else auto
    port_range: tuple[int, int] | None = None
    retries: int = 2
    python: str | None = None
    ports_dir: Path | None = None
    keep_going: bool = False  # run every trial even when the first ones show a broken set-up


@dataclass
class RunResult:
    """What a finished (or interrupted) sweep leaves."""

    run_dir: Path
    tally: Tally
    results: list[Path] = field(default_factory=list)
    interrupted: bool = False


# (plan, open run directory) -> where the trials come from
SourceFactory = Callable[[Plan, RunDir], TrialSource]
# (plan, open run directory, the run's id, where events go, settings) -> where the trials run
RunnerFactory = Callable[[Plan, RunDir, str, Callable[[Event], None], RunSettings], Runner]


def prepare(settings: RunSettings) -> Plan:
    """Load, expand and check everything; raises SpecError before anything starts."""
    spec = load_sweep(settings.sweep, settings.overrides)
    engine = load_engine(spec.engine, str(spec.path), python=settings.python)
    plan = Plan(spec, engine)
    plan.validate()
    if spec.search is not None:  # and the search: section (Optuna imported only then)
        from seel.search.factory import search_settings

        search_settings(plan)
    return plan


def grid_source(plan: Plan, run_dir: RunDir) -> TrialSource:
    """Every trial of the grid not yet done."""
    return GridSource.of(plan.spec, run_dir.done_ids())


def local_runner(
    plan: Plan, run_dir: RunDir, run_id: str, emit: Callable[[Event], None], settings: RunSettings
) -> Runner:
    """Trials as processes of this machine."""
    machine = Machine(
        plan,
        run_dir.path,
        run_id,
        ProcessLedger(run_dir.path / "procs.jsonl"),
        PortAllocator(settings.port_range or plan.spec.port_range, settings.ports_dir),
    )
    return LocalRunner(machine, emit)


AUTO_CAP = 64  # trials at once under --parallel auto, whatever the load allows


def parallelism(settings: RunSettings, plan: Plan) -> tuple[int, bool]:
    """Trials at once: a fixed number (False), or the cap under --parallel auto (True), where
    an `AutoParallel` decides each start."""
    chosen = settings.parallel if settings.parallel is not None else plan.spec.parallel
    if isinstance(chosen, int):
        return chosen, False
    cap = min(AUTO_CAP, plan.engine.max_parallel or AUTO_CAP)
    budget = (plan.spec.search or {}).get("trials")
    if isinstance(budget, int) and budget > 0:
        # An adaptive sampler learns only from finished trials: at most a tenth of the budget
        # runs before it hears back (at least 2), or it is little better than random.
        cap = min(cap, max(2, budget // 10))
    return cap, True


def default_out(spec: SweepSpec) -> Path:
    return Path("runs") / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _manifest(plan: Plan, settings: RunSettings, source: TrialSource) -> RunManifest:
    spec = plan.spec
    return RunManifest(
        run_id=RunManifest.new_run_id(),
        sweep=str(spec.path),
        name=spec.name,
        engine=plan.engine.name,
        fingerprint=spec.fingerprint(),
        trial_count=source.total,
        budget=spec.search is not None,
        parameters=spec.space.describe(),
        fixed={name: value for name, _, value in spec.fixed},
        repeats=spec.repeats,
        overrides=list(settings.overrides),
    )


async def _stop_strays(run_dir: RunDir) -> bool:
    """Stop what a dead controller of this run left; False if a signal came meanwhile."""
    if run_dir.manifest is None:
        return True
    ledger = ProcessLedger(run_dir.path / "procs.jsonl")
    run_id = run_dir.manifest.run_id
    try:
        strays = asyncio.ensure_future(asyncio.to_thread(ledger.stop_strays, run_id))
        try:
            await asyncio.shield(strays)
        except asyncio.CancelledError:
            await strays  # finish stopping them, then start nothing
            return False
        return True
    finally:
        ledger.close()


async def run_sweep(
    settings: RunSettings,
    sink: Sink,
    plan: Plan | None = None,
    *,
    source: SourceFactory | None = None,
    runner: RunnerFactory = local_runner,
) -> RunResult:
    """Run or resume a sweep. Cancelling it stops every child and records what finished.

    Trials come from `source`; by default the grid, or the search when the sweep has `search:`.

    A sink that fails (a closed pipe, a value it cannot show) is reported once and switched off;
    it never ends the sweep.
    """
    sink = isolated(sink)
    plan = plan or prepare(settings)
    if source is None:
        source = grid_source
        if plan.spec.search is not None:
            from seel.search.factory import search_source

            source = search_source(sink.emit)
    spec = plan.spec
    out = (settings.out or default_out(spec)).resolve()  # children run in their trial directory
    parallel, auto_wanted = parallelism(settings, plan)
    run_dir = RunDir(out, spec.fingerprint())
    result = RunResult(run_dir=out, tally=Tally())
    started = time.monotonic()
    try:
        if not await _stop_strays(run_dir):
            result.interrupted = True
            return result
        trials = source(plan, run_dir)
        manifest = run_dir.begin(_manifest(plan, settings, trials))
        done = run_dir.done_ids()
        sink.emit(
            SweepStarted(
                run_id=manifest.run_id,
                run_dir=str(out),
                sweep=spec.name,
                engine=plan.engine.name,
                trial_count=trials.total,
                pending=max(0, trials.total - len(done)),
                parallel=parallel,
                parameters=_axes(plan),
                budget=manifest.budget,
                auto=auto_wanted,
            )
        )
        scheduler = Scheduler(
            trials,
            parallel=parallel,
            retries=settings.retries,
            record=run_dir.record,
            sink=sink,
            fail_fast=None if settings.keep_going else FailFast(),
        )
        result.tally = scheduler.tally
        where = runner(plan, run_dir, manifest.run_id, scheduler.emit, settings)
        # auto reads the meter of the machine the trials run on (one meter for both)
        meter = (where.meter or LoadMeter()) if auto_wanted else None
        if meter is not None:
            scheduler.auto = AutoParallel(meter)
            meter.start()
        try:
            await scheduler.run(where)
        except asyncio.CancelledError:
            result.interrupted = True
        finally:
            await where.aclose()
            if meter is not None:
                await meter.aclose()
        result.results = run_dir.compact()
        sink.emit(
            SweepFinished(
                run_id=manifest.run_id,
                counts=dict(result.tally.by_status),
                elapsed_s=time.monotonic() - started,
                results=[str(p) for p in result.results],
                interrupted=result.interrupted,
            )
        )
    finally:
        run_dir.close()
    return result


def _axes(plan: Plan) -> dict[str, list[object]]:
    """Each parameter's values for displays: a grid's values, or a range's bounds."""
    return {p.name: list(p.probe_values()) for p in plan.spec.parameters}
