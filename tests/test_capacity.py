"""`--parallel auto`: each trial's CPU and memory measured as it runs (fake children whose CPU use
is known), the policy that keeps the machine below saturation, the scheduler consulting it, and
the report's warning when timeouts track load."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from seel.capacity import AutoParallel, LoadMeter, TrialUsage, read_pressure, with_usage
from seel.grid import GridSource
from seel.loadflag import timeouts_track_load
from seel.outcome import Outcome, Status
from seel.results import TRIAL_COLUMNS, is_metric_column, result_rows
from seel.scheduler import Scheduler
from seel.space import TrialSpec
from tests.test_scheduler import Events, outcome, trials

BURNER = Path(__file__).parent / "children" / "burner.py"


# -- measuring ------------------------------------------------------------------------------


def burn(seconds: float, *more: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(BURNER), "--cpu", str(seconds), *more],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("burned")
    return proc


def reap_child(proc: subprocess.Popen[str]) -> None:
    """Have a burner started with --child-cpu end and reap its child."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "reaped\n"


def finish(proc: subprocess.Popen[str]) -> None:
    proc.communicate("\n", timeout=30)  # closes its pipes and waits for it


async def test_meter_measures_each_trials_cpu_and_memory() -> None:
    meter = LoadMeter(tick_s=0.05)
    meter.trial_started("a")
    meter.trial_started("b")
    heavy, light = burn(0.6), burn(0.1)
    try:
        meter.spawned("a", heavy.pid)
        meter.spawned("b", light.pid)
        meter.measure("a")
        meter.measure("b")
    finally:
        finish(heavy)
        finish(light)
        await meter.aclose()
    a, b = meter.trial_finished("a"), meter.trial_finished("b")
    assert a is not None and b is not None
    # what each burned, plus the interpreter's start-up (well under half a second)
    assert 0.6 <= a.cpu_s < 0.6 + 0.5
    assert 0.1 <= b.cpu_s < 0.1 + 0.5
    assert a.cpu_s > b.cpu_s
    assert 1 < a.peak_rss_mb < 500  # a Python process's resident memory
    assert meter.trial_finished("a") is None  # told once


async def test_meter_keeps_the_last_sample_of_a_process_that_is_gone() -> None:
    meter = LoadMeter(tick_s=0.05)
    meter.trial_started("t")
    proc = burn(0.3)
    meter.spawned("t", proc.pid)
    meter.measure("t")
    finish(proc)
    meter.measure("t")  # gone now: its last sample stands
    usage = meter.trial_finished("t")
    await meter.aclose()
    assert usage is not None and usage.cpu_s >= 0.3


@pytest.mark.parametrize(
    "tree",
    [
        pytest.param(["--child-cpu", "1.0"], id="child"),
        # the grandchild ends and is reaped by the child, which ends and is reaped by the
        # trial's process, all between two samples
        pytest.param(["--child-cpu", "0", "--child-args=--child-cpu 1.0"], id="chain"),
    ],
)
async def test_meter_counts_a_descendant_reaped_within_the_trial_once(tree: list[str]) -> None:
    meter = LoadMeter(tick_s=10.0)  # no tick meanwhile: measured when the test says
    meter.trial_started("t")
    proc = burn(0.1, *tree)
    try:
        meter.spawned("t", proc.pid)
        meter.measure("t")  # all alive: seen, each with its own CPU
        reap_child(proc)
        meter.measure("t")  # the 1.0 s is now in the process's children's CPU
    finally:
        finish(proc)
        await meter.aclose()
    usage = meter.trial_finished("t")
    assert usage is not None
    # 1.1 s burned, plus the interpreters' start-up; counted twice it would be 2.1 s or more
    assert 1.1 <= usage.cpu_s < 1.1 + 0.8


# Run alone: as a subreaper it reaps its orphans, as init would, and leaves none to the tests.
OUTLIVES_A_ZOMBIE = r"""
import asyncio, ctypes, os, subprocess, sys
from seel.capacity import LoadMeter

async def main() -> None:
    assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    meter = LoadMeter(tick_s=10.0)
    meter.trial_started("t")
    proc = subprocess.Popen([sys.executable, sys.argv[1], "--cpu", "0.1", "--child-cpu", "1.0",
                             "--orphan"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline().split()[-1])
    meter.spawned("t", proc.pid)
    meter.measure("t")  # both alive
    proc.stdin.write("\n")
    proc.stdin.flush()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # it ended, not reaped: a zombie
    os.waitpid(child, 0)  # its child, orphaned to this process, ends and is reaped here
    meter.measure("t")  # as a trial's stop does before it reaps its process
    proc.wait()
    usage = meter.trial_finished("t")
    await meter.aclose()
    print(usage.cpu_s)

asyncio.run(main())
"""


def test_meter_counts_a_descendant_that_outlived_its_parent_and_was_reaped_elsewhere() -> None:
    """The stop ladder signals a group: the trial's process ends (a zombie until the controller
    reaps it) before its child, which init reaps: that CPU is in no process of the trial."""
    done = subprocess.run(
        [sys.executable, "-c", OUTLIVES_A_ZOMBIE, str(BURNER)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert 1.1 <= float(done.stdout) < 1.1 + 0.8


async def test_meter_counts_a_descendant_in_its_own_session_that_outlives_its_parent() -> None:
    """As Flower's SuperLink starts flower-superexec: in a session of its own, never reaped by
    the process the trial started."""
    meter = LoadMeter(tick_s=10.0)
    meter.trial_started("t")
    proc = burn(0.1, "--child-cpu", "1.0", "--child-session", "--orphan")
    try:
        meter.spawned("t", proc.pid)
        meter.measure("t")  # both alive
    finally:
        finish(proc)  # it exits without reaping its child, which ends on its own
        await meter.aclose()
    meter.measure("t")
    usage = meter.trial_finished("t")
    assert usage is not None
    assert 1.1 <= usage.cpu_s < 1.1 + 0.8


@pytest.mark.parametrize(
    "child",
    [
        pytest.param([], id="running"),
        # a reused Flower deployment: its SuperNode has not yet reaped the ClientApps of the
        # trial before, and reaps them later, into its children's CPU
        pytest.param(["--zombie-child"], id="ended-not-reaped"),
    ],
)
async def test_meter_counts_only_what_a_taken_over_tree_uses_from_then_on(child: list[str]) -> None:
    meter = LoadMeter(tick_s=10.0)
    meter.trial_started("t")
    proc = burn(0.1, "--child-cpu", "1.0", *child)
    try:
        meter.adopted("t", proc.pid)  # with its child: 1.1 s used before
        reap_child(proc)
        meter.measure("t")
    finally:
        finish(proc)
        await meter.aclose()
    usage = meter.trial_finished("t")
    assert usage is not None
    assert 0.0 <= usage.cpu_s < 0.5  # the ending of both, not the 1.1 s burned before


async def test_meter_records_the_machines_load_while_a_trial_runs() -> None:
    meter = LoadMeter(tick_s=0.02)
    ticks: list[None] = []
    two_ticks = asyncio.Event()
    meter.on_tick.append(lambda: (ticks.append(None), len(ticks) >= 2 and two_ticks.set()))
    meter.trial_started("t")  # starts sampling
    finish(burn(0.1))
    await two_ticks.wait()
    usage = meter.trial_finished("t")
    await meter.aclose()
    assert usage is not None and usage.machine_load is not None
    assert 0.0 <= usage.machine_load <= 1.0
    assert 0.0 <= meter.busy <= 1.0


def test_usage_lands_in_the_outcome() -> None:
    trial = TrialSpec(trial_id="t00000", index=0, params={}, repeat=0, seed=0)
    base = outcome(trial, Status.OK, 1)
    assert with_usage(base, None) is base
    done = with_usage(base, TrialUsage(0.51234, 1.23456, 99.987, 3.0))
    assert (done.machine_load, done.cpu_s, done.peak_rss_mb) == (0.512, 1.235, 100.0)
    doc = done.to_json()
    assert (doc["machine_load"], doc["cpu_s"], doc["peak_rss_mb"]) == (0.512, 1.235, 100.0)
    [row] = result_rows(doc)
    assert (row["machine_load"], row["cpu_s"], row["peak_rss_mb"]) == (0.512, 1.235, 100.0)
    old = base.to_json()
    for key in ("machine_load", "cpu_s", "peak_rss_mb"):
        del old[key]
    [row] = result_rows(old)  # a ledger written before these columns still reads
    assert (row["machine_load"], row["cpu_s"], row["peak_rss_mb"]) == (None, None, None)
    for column in ("machine_load", "cpu_s", "peak_rss_mb"):  # trial columns, never metrics
        assert column in TRIAL_COLUMNS and not is_metric_column(column, [])


# -- the policy -----------------------------------------------------------------------------


class FakeMeter:
    """A machine whose load and memory the test sets."""

    def __init__(self, cores: int = 2, busy: float = 0.0, available_mb: float = 16_000) -> None:
        self.cores = cores
        self.busy = busy
        self.available_mb = available_mb
        self.own = 0.0  # the controller's own CPU use, in cores
        self.pressure: float | None = None  # no pressure information, unless a test sets it
        self.on_tick: list[object] = []


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def policy(meter: FakeMeter, **kw: float) -> tuple[AutoParallel, Clock]:
    clock = Clock()
    return AutoParallel(meter, clock=clock, **kw), clock  # type: ignore[arg-type]


def admitted(auto: AutoParallel, clock: Clock, most: int = 200) -> int:
    """How many trials it lets start, one per stagger, with none finishing."""
    running = 0
    while running < most and auto.may_start(running):
        auto.started()
        running += 1
        clock.now += auto.stagger_s
    return running


async def test_the_first_trial_always_starts_then_it_probes_while_the_machine_is_idle() -> None:
    auto, clock = policy(FakeMeter(busy=0.9))
    assert auto.may_start(0)
    auto.started()
    clock.now += 10
    assert not auto.may_start(1)  # busy: no probing
    auto.meter.busy = 0.1  # type: ignore[misc]
    assert auto.may_start(1)  # one more after settle_s
    auto.started()
    assert not auto.may_start(2)  # not again until it has settled
    clock.now += auto.settle_s
    assert auto.may_start(2)


async def test_trials_fit_in_what_the_machine_leaves_of_the_target() -> None:
    auto, clock = policy(FakeMeter(cores=2, busy=0.0), target=0.75)
    auto.learn(cpu_s=1.0, elapsed_s=10.0, peak_rss_mb=100)  # a trial keeps 0.1 core busy
    assert auto.model_limit(0) == 15  # 0.75 x 2 cores / 0.1
    assert admitted(auto, clock) == 15


async def test_others_load_leaves_less_room_but_never_below_the_minimum_share() -> None:
    auto, _ = policy(FakeMeter(cores=2, busy=0.5), target=0.75, min_share=0.25)
    auto.learn(cpu_s=1.0, elapsed_s=10.0, peak_rss_mb=100)
    assert auto.model_limit(0) == 5  # others use 1 core: 0.5 core left for 0.1-core trials
    auto.meter.busy = 1.0  # type: ignore[misc]
    assert auto.model_limit(0) == 5  # saturated by others: the minimum share, 0.5 core
    auto.learn(cpu_s=20.0, elapsed_s=10.0, peak_rss_mb=100)
    auto.learn(cpu_s=20.0, elapsed_s=10.0, peak_rss_mb=100)  # now a trial takes two cores
    assert auto.model_limit(0) == 1  # at least one runs


async def test_memory_bounds_it() -> None:
    auto, _ = policy(FakeMeter(cores=64, busy=0.0, available_mb=512 + 1000))
    auto.learn(cpu_s=0.1, elapsed_s=10.0, peak_rss_mb=250)
    assert auto.model_limit(3) == 3 + 4  # 1,000 MB to spare, 250 MB a trial


async def test_the_cap_bounds_it_and_starts_are_staggered() -> None:
    auto, clock = policy(FakeMeter(cores=64), cap=6)
    auto.learn(cpu_s=0.01, elapsed_s=10.0, peak_rss_mb=10)
    assert auto.may_start(0)
    auto.started()
    assert not auto.may_start(1)  # too soon after the last start
    clock.now += auto.stagger_s
    assert auto.may_start(1)
    assert admitted(auto, clock) == 6


async def test_short_trials_are_spaced_by_a_tenth_of_their_life() -> None:
    auto, clock = policy(FakeMeter(cores=64), stagger_s=0.25)
    auto.learn(cpu_s=0.01, elapsed_s=0.2, peak_rss_mb=10)
    auto.started()
    clock.now += 0.01
    assert not auto.may_start(1)
    clock.now += 0.015  # 0.025 s: past a tenth of 0.2 s, well short of stagger_s
    assert auto.may_start(1)


async def test_the_controllers_own_cpu_counts_as_sweep_load_not_others() -> None:
    meter = FakeMeter(cores=2, busy=1.0)
    auto, _ = policy(meter, target=0.75, min_share=0.25)
    auto.learn(cpu_s=1.0, elapsed_s=10.0, peak_rss_mb=100)  # 0.1 core a trial
    meter.own = 1.5  # the machine is busy with the sweep itself, driving 5 trials
    assert auto.model_limit(5) == 15  # nothing is anyone else's: the whole target is ours



async def test_cpu_pressure_holds_trials_to_what_does_not_make_them_wait() -> None:
    meter = FakeMeter(cores=2, busy=0.0)
    auto, clock = policy(meter, pressure_target=0.1, settle_s=2.0, stagger_s=0.0)
    auto.learn(cpu_s=0.1, elapsed_s=10.0, peak_rss_mb=10)  # the model alone would allow 64
    assert auto.limit(10) == 64  # no pressure reported: the model decides
    meter.pressure = 0.0
    assert auto.limit(0) == 1  # from one trial...
    assert auto.limit(1) == 2  # ...half as many again as run, each settle_s, while it is low
    assert auto.limit(2) == 2
    clock.now += 2.0
    assert auto.limit(2) == 3
    clock.now += 2.0
    assert auto.limit(8) == 12
    meter.pressure = 0.07  # between half the target and the target: hold
    clock.now += 2.0
    assert auto.limit(12) == 12
    meter.pressure = 0.3  # processes wait for a core: a quarter fewer, each settle_s
    clock.now += 2.0
    assert auto.limit(12) == 9
    assert auto.limit(12) == 9
    clock.now += 2.0
    assert auto.limit(9) == 7
    for _ in range(20):
        clock.now += 2.0
        auto.limit(auto.pressure_limit)
    assert auto.pressure_limit == 1  # never below min_share x cores trials (0.25 x 2 -> 1)
    assert auto.may_start(0)  # and one always starts


async def test_the_pressure_floor_is_a_share_of_the_cores() -> None:
    meter = FakeMeter(cores=16, busy=0.0)
    meter.pressure = 0.9  # someone else saturates the machine
    auto, clock = policy(meter, min_share=0.25)
    auto.learn(cpu_s=0.1, elapsed_s=10.0, peak_rss_mb=10)
    for running in (20, 15, 11, 8, 6, 5, 4, 4):
        clock.now += auto.settle_s
        auto.limit(running)
    assert auto.pressure_limit == 4  # a quarter of 16 cores: the sweep still progresses


def test_pressure_is_read_from_the_kernels_stall_totals(tmp_path: Path) -> None:
    psi = tmp_path / "cpu"
    psi.write_text("some avg10=1.00 avg60=0.50 avg300=0.10 total=2500000\n"
                   "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert read_pressure(psi) == 2.5
    assert read_pressure(tmp_path / "missing") is None
    psi.write_text("nonsense\n")
    assert read_pressure(psi) is None


async def test_meter_records_the_pressure_while_a_trial_runs(tmp_path: Path) -> None:
    psi = tmp_path / "cpu"
    psi.write_text("some avg10=0 avg60=0 avg300=0 total=1000000\n")
    meter = LoadMeter(tick_s=10.0, pressure=psi)
    meter.trial_started("t")
    meter._last_at = time.monotonic() - 1.0  # one second since the last sample
    psi.write_text("some avg10=0 avg60=0 avg300=0 total=1250000\n")  # a quarter second waited
    meter.sample()
    usage = meter.trial_finished("t")
    await meter.aclose()
    assert meter.pressure is not None and 0.2 < meter.pressure <= 0.25
    assert usage is not None and usage.cpu_pressure == meter.pressure
    assert LoadMeter(pressure=tmp_path / "missing").pressure is None


# -- the scheduler consults it --------------------------------------------------------------


class CostlyRunner:
    """Trials that report a known CPU cost; they finish when the test opens the gate."""

    def __init__(self, cpu_s: float, elapsed_s: float) -> None:
        self.cpu_s, self.elapsed_s = cpu_s, elapsed_s
        self.active = self.max_active = 0
        self.gate = asyncio.Event()
        self.first_done = False
        self._reached: dict[int, asyncio.Event] = {}

    def _count(self, step: int) -> None:
        self.active += step
        self.max_active = max(self.max_active, self.active)
        for n, event in self._reached.items():
            if self.active >= n:
                event.set()

    async def reach(self, n: int) -> None:
        """Return once `n` trials run at once."""
        event = self._reached.setdefault(n, asyncio.Event())
        if self.active >= n:
            event.set()
        await event.wait()

    def stop(self, trial_id: str, status: Status, reason: str) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def run(self, trial: TrialSpec, attempt: int) -> Outcome:
        self._count(1)
        try:
            if self.first_done:
                await self.gate.wait()
            self.first_done = True
            return replace(
                outcome(trial, Status.OK, attempt),
                cpu_s=self.cpu_s, elapsed_s=self.elapsed_s, peak_rss_mb=50.0,
            )
        finally:
            self._count(-1)


async def test_scheduler_runs_as_many_as_the_policy_allows() -> None:
    auto = AutoParallel(FakeMeter(cores=2, busy=0.0), stagger_s=0.0, target=0.75)  # type: ignore[arg-type]
    runner, recorded = CostlyRunner(cpu_s=0.5, elapsed_s=10.0), []  # 0.05 core a trial
    scheduler = Scheduler(
        GridSource(trials(100), 100, set()), parallel=64, retries=0,
        record=recorded.append, sink=Events(), auto=auto,
    )
    task = asyncio.create_task(scheduler.run(runner))
    await runner.reach(30)  # 0.75 x 2 / 0.05 = 30 once the first trial has taught it
    auto.changed.set()  # a load sample: it looks again
    for _ in range(20):
        await asyncio.sleep(0)
    assert runner.max_active == 30
    runner.gate.set()
    await task
    assert len(recorded) == 100
    assert runner.max_active == 30


async def test_a_load_sample_wakes_the_scheduler_to_start_more() -> None:
    meter = FakeMeter(cores=2, busy=0.9)
    auto = AutoParallel(meter, stagger_s=0.0, settle_s=0.0)  # type: ignore[arg-type]
    gate = asyncio.Event()

    class Waiting(CostlyRunner):
        async def run(self, trial: TrialSpec, attempt: int) -> Outcome:
            self._count(1)
            await gate.wait()
            self._count(-1)
            return outcome(trial, Status.OK, attempt)

    runner = Waiting(0.0, 1.0)
    scheduler = Scheduler(
        GridSource(trials(3), 3, set()), parallel=8, retries=0, record=lambda o: None,
        sink=Events(), auto=auto,
    )
    task = asyncio.create_task(scheduler.run(runner))
    await runner.reach(1)
    for _ in range(10):
        await asyncio.sleep(0)
    assert runner.active == 1  # busy machine, nothing learned: one at a time
    meter.busy = 0.1
    auto.changed.set()  # the meter's next tick
    await runner.reach(2)
    gate.set()
    await task


# -- the report's warning -------------------------------------------------------------------


def test_timeouts_that_track_load_are_flagged() -> None:
    statuses = ["timeout"] * 4 + ["ok"] * 8
    loads = [0.95, 0.97, 0.9, 0.99, 0.3, 0.4, 0.35, 0.5, 0.45, 0.3, 0.6, 0.4]
    flag = timeouts_track_load(statuses, loads)
    assert flag is not None and flag.startswith("timeouts track machine load: the 4 timeouts")
    assert "--parallel" in flag


@pytest.mark.parametrize(
    ("statuses", "loads"),
    [
        (["timeout"] * 4 + ["ok"] * 8, [0.5] * 12),  # same load
        (["timeout"] * 4 + ["ok"] * 8, [0.3, 0.4, 0.35, 0.5] + [0.95] * 8),  # the other way
        (["timeout"] * 2 + ["ok"] * 8, [0.99, 0.99] + [0.1] * 8),  # too few timeouts
        (["timeout"] * 4 + ["ok"] * 4, [0.9] * 4 + [None] * 4),  # the others not measured
        (["ok"] * 12, [0.1 * i for i in range(12)]),
    ],
)
def test_no_flag_without_a_clear_link(statuses: list[str], loads: list[float | None]) -> None:
    assert timeouts_track_load(statuses, loads) is None


@pytest.mark.parametrize(
    ("column", "busy", "idle", "said"),
    [("machine_load", 0.97, 0.35, "machine load"), ("cpu_pressure", 0.4, 0.03, "CPU pressure")],
)
def test_seel_report_flags_timeouts_that_track_load(
    tmp_path: Path, column: str, busy: float, idle: float, said: str
) -> None:
    import json

    import polars as pl

    from seel.analysis import build_report
    from seel.manifest import MANIFEST_FILE, RunManifest
    from seel.store import RESULTS_PARQUET

    rows = []
    for i in range(12):
        trial = TrialSpec(trial_id=f"t{i:05d}", index=i, params={"x": i % 3}, repeat=0, seed=0)
        timed_out = i % 3 == 0
        done = replace(
            outcome(trial, Status.TIMEOUT if timed_out else Status.OK, 1),
            parties=(),
            **{column: busy if timed_out else idle},
        )
        rows += result_rows(done.to_json())
    pl.DataFrame(rows).write_parquet(tmp_path / RESULTS_PARQUET)
    manifest = RunManifest(
        run_id="r", sweep="s.yml", name="t", engine="builtin", fingerprint="f", trial_count=12,
        budget=False, parameters={"x": {"values": [0, 1, 2]}}, fixed={}, repeats=1, overrides=[],
    )
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest.to_json()))
    report = build_report(tmp_path)
    flags = [f for f in report.flags if f.startswith("timeouts track")]
    assert flags == [flags[0]] and flags[0].startswith(f"timeouts track {said}: the 4 timeouts")
