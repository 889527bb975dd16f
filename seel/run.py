"""Running a sweep: validate everything, open (or resume) the run directory, schedule, compact.

This is the library entry point the CLI calls; it knows nothing of terminals or output formats.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from seel.engine import Engine, load_engine
from seel.events import Sink, SweepFinished, SweepStarted
from seel.plan import Plan
from seel.ports import PortAllocator
from seel.scheduler import GridSource, Scheduler, Tally
from seel.store import RunDir
from seel.sweep import SweepSpec, iter_trials, load_sweep
from seel.trial import LocalRunner


@dataclass(frozen=True)
class RunSettings:
    """What the user asked for on the command line."""

    sweep: Path
    overrides: tuple[str, ...] = ()
    out: Path | None = None
    parallel: int | None = None
    port_range: tuple[int, int] | None = None
    retries: int = 2
    python: str | None = None
    ports_dir: Path | None = None


@dataclass
class RunResult:
    """What a finished (or interrupted) sweep leaves."""

    run_dir: Path
    tally: Tally
    results: list[Path] = field(default_factory=list)
    interrupted: bool = False
    strays_stopped: list[int] = field(default_factory=list)


def prepare(settings: RunSettings) -> tuple[SweepSpec, Engine, Plan]:
    """Load, expand and validate everything; raises SpecError before anything starts."""
    spec = load_sweep(settings.sweep, settings.overrides)
    engine = load_engine(spec.engine, str(spec.path), python=settings.python)
    plan = Plan(spec, engine)
    plan.validate()
    return spec, engine, plan


def default_parallel(engine: Engine) -> int:
    """What the engine and the cores allow."""
    cores = os.cpu_count() or 1
    return min(cores, engine.max_parallel) if engine.max_parallel else cores


def default_out(spec: SweepSpec) -> Path:
    return Path("runs") / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"


async def run_sweep(
    settings: RunSettings, sink: Sink, prepared: tuple[SweepSpec, Engine, Plan] | None = None
) -> RunResult:
    """Run or resume a sweep. Cancelling it stops every child and records what finished."""
    spec, engine, plan = prepared or prepare(settings)
    out = (settings.out or default_out(spec)).resolve()  # children run in their trial directory
    parallel = settings.parallel or spec.parallel or default_parallel(engine)
    port_range = settings.port_range or spec.port_range
    plan_doc = {
        "sweep": str(spec.path),
        "name": spec.name,
        "engine": engine.name,
        "fingerprint": spec.fingerprint(),
        "trial_count": spec.trial_count(),
        "parameters": {p.name: list(p.values) for p in spec.parameters},
        "fixed": {name: value for name, _, value in spec.fixed},
        "repeats": spec.repeats,
        "overrides": list(settings.overrides),
        "run_id": uuid.uuid4().hex[:12],
    }
    run_dir = RunDir(out, plan_doc)
    result = RunResult(run_dir=out, tally=Tally())
    started = time.monotonic()
    try:
        strays = asyncio.ensure_future(asyncio.to_thread(run_dir.stop_strays))  # it waits for them
        try:
            result.strays_stopped = await asyncio.shield(strays)
        except asyncio.CancelledError:
            # Interrupted while stopping what a dead controller left: finish that, start nothing.
            result.strays_stopped = await strays
            result.interrupted = True
            return result
        done = run_dir.done_ids()
        run_id = str(run_dir.plan["run_id"])
        sink.emit(
            SweepStarted(
                run_id=run_id,
                run_dir=str(out),
                sweep=spec.name,
                engine=engine.name,
                trial_count=spec.trial_count(),
                pending=spec.trial_count() - len(done),
                parallel=parallel,
                parameters={p.name: list(p.values) for p in spec.parameters},
            )
        )
        timeouts = {**engine.timeouts, **spec.timeouts}
        runner = LocalRunner(
            plan, run_dir, PortAllocator(port_range, settings.ports_dir), sink, timeouts
        )
        scheduler = Scheduler(
            GridSource(iter_trials(spec), done),
            runner,
            parallel=parallel,
            retries=settings.retries,
            record=run_dir.record,
            sink=sink,
        )
        result.tally = scheduler.tally
        try:
            await scheduler.run()
        except asyncio.CancelledError:
            result.interrupted = True
        finally:
            await runner.aclose()
        result.results = run_dir.compact()
        sink.emit(
            SweepFinished(
                run_id=run_id,
                counts=dict(result.tally.by_status),
                elapsed_s=time.monotonic() - started,
                results=[str(p) for p in result.results],
                interrupted=result.interrupted,
            )
        )
    finally:
        run_dir.close()
    return result
