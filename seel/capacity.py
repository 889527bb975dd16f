"""How many trials the machine holds without disturbing them (`--parallel auto`), and how loaded
it was while each trial ran.

Running more trials than the cores can serve slows every trial's phases, and on timing-sensitive
parameters (a round's `max_timeout`, a quorum) SEEL's own load would turn into timeouts that the
parameters did not cause. So:

1. `LoadMeter` samples the machine's CPU use (all processes, SEEL's and anyone else's), its CPU
   pressure and free memory every `tick_s`, and the CPU time and resident memory of each trial's
   processes (told to it as they are spawned; the machine the trials run on has one) and of
   everything they start, found by parent links each tick, in their sessions or in sessions of
   their own (Flower's SuperLink starts flower-superexec and its ServerApps so). A process's
   CPU is counted once: while it lives, as its own; once ended, in its parent's children's CPU if
   a live process of the trial reaped it, else as last sampled. A trial's
   record gets `machine_load` (the machine's mean busy fraction while it ran, 0-1),
   `cpu_pressure` (the mean share of that time in which some runnable process waited for a core,
   from the kernel's pressure stall information, `/proc/pressure/cpu`; null where the kernel has
   none), `cpu_s` and `peak_rss_mb`.
2. `AutoParallel` (the scheduler's) keeps the machine below `target` busy: from finished trials
   it learns what one trial costs (CPU-s per second of its life, and its peak memory), and allows
   as many trials as fit in what the rest of the machine leaves of `target`. When others fill the
   machine, SEEL still takes `min_share` of it (a sweep must progress; its trials' records say
   how loaded the machine was, and `seel report` warns when timeouts track that). Before the
   first trial has finished it probes: one more trial each `settle_s` while the machine is below
   `probe_below` busy. Starts are spaced by `stagger_s` (or a tenth of a trial's life, if less),
   so that start-up bursts do not pile up;
   memory is kept for everyone else; at least one trial runs.
3. Average load hides bursts. FL trials are mostly waiting (for a quorum, a poll, a round) between
   short bursts of work (starting, a round's training, evaluating, stopping); at 50 % mean load the
   bursts of many trials still meet, and each is slowed while its processes wait for a core.
   Where the kernel reports CPU pressure, `AutoParallel` also holds it under `pressure_target`:
   starting from one trial, it allows half as many again as are running each `settle_s` while
   the pressure over that time is below half the target, and a quarter fewer when it is above
   the target, down to one trial for each core in `min_share` of the cores (at least one).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

from seel import proctree
from seel.outcome import Outcome

TICK_S = 0.25
PRESSURE = Path("/proc/pressure/cpu")


def read_pressure(path: Path = PRESSURE) -> float | None:
    """Seconds in all that some runnable task has waited for a CPU (PSI `some total`), or None
    where the kernel does not keep it."""
    try:
        with path.open(encoding="ascii") as f:
            first = f.readline()
    except (OSError, ValueError):
        return None
    for word in first.split():
        if word.startswith("total="):
            try:
                return int(word.removeprefix("total=")) / 1e6
            except ValueError:
                return None
    return None


@dataclass
class _Proc:
    """A process of a trial's tree, as last sampled."""

    ticks: int  # its start time (clock ticks since boot): a recycled pid is another process
    ppid: int  # its parent, as last seen
    cpu: float = 0.0  # CPU seconds: its own and those of the children it has reaped
    children_cpu: float = 0.0  # the second part
    rss: float = 0.0


@dataclass
class _Trial:
    started: float
    # the processes it spawned or took over (roots), and their descendants, by pid
    procs: dict[int, _Proc] = field(default_factory=dict)
    retired: float = 0.0  # CPU seconds of its processes that ended and no process of it reaped
    # CPU seconds of ended processes not yet found in their nearest ancestor's children's CPU,
    # by that ancestor: settled at the next sample (the reaping may fall between two reads)
    unsettled: dict[int, float] = field(default_factory=dict)
    before: float = 0.0  # CPU seconds its processes had used before it took them over
    peak_rss: float = 0.0
    load_sum: float = 0.0
    load_n: int = 0
    pressure_sum: float = 0.0
    pressure_n: int = 0


@dataclass(frozen=True)
class TrialUsage:
    """What one trial used, and how loaded the machine was meanwhile."""

    machine_load: float | None  # mean busy fraction of all cores while it ran
    cpu_s: float  # CPU seconds of its processes
    peak_rss_mb: float  # the largest total resident memory of its processes at once
    elapsed_s: float
    cpu_pressure: float | None = None  # mean share of its time some task waited for a core


def with_usage(outcome: Outcome, usage: TrialUsage | None) -> Outcome:
    """The outcome with what its trial used recorded (as it is, when it was not measured)."""
    if usage is None:
        return outcome
    return replace(
        outcome,
        machine_load=None if usage.machine_load is None else round(usage.machine_load, 3),
        cpu_pressure=None if usage.cpu_pressure is None else round(usage.cpu_pressure, 3),
        cpu_s=round(usage.cpu_s, 3),
        peak_rss_mb=round(usage.peak_rss_mb, 1),
    )


class LoadMeter:
    """Samples machine load and each trial's processes; see the module."""

    def __init__(
        self, tick_s: float = TICK_S, cpu_count: int | None = None, pressure: Path = PRESSURE
    ) -> None:
        self.tick_s = tick_s
        self.cores = cpu_count or os.cpu_count() or 1
        self.load = 1.0  # busy fraction of all cores over the last tick (busy until measured)
        self.recent: deque[float] = deque(maxlen=max(1, round(1.0 / tick_s)))  # the last second
        # CPU pressure: the share of each tick in which some runnable task waited for a core
        self._pressure_path = pressure
        self._last_stall = read_pressure(pressure)
        self.pressures: deque[float] = deque(maxlen=max(1, round(2.0 / tick_s)))  # 2 seconds
        self.available_mb = psutil.virtual_memory().available / 2**20
        self.own = 0.0  # cores this process (the controller) used over the last tick
        self._trials: dict[str, _Trial] = {}
        self._last_cpu = psutil.cpu_times()
        self._me = psutil.Process()
        self._last_own = self._own_cpu()
        self._last_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.on_tick: list[Callable[[], None]] = []

    # -- what the runner tells it ---------------------------------------------------------

    def trial_started(self, trial_id: str) -> None:
        self.start()
        self._trials[trial_id] = _Trial(time.monotonic())

    def spawned(self, trial_id: str, pid: int) -> None:
        trial = self._trials.get(trial_id)
        now = proctree.usage(pid)
        if trial is not None and now is not None:  # read from the next tick on
            trial.procs[pid] = _Proc(now.proc.ticks, now.proc.ppid)

    def adopted(self, trial_id: str, pid: int) -> None:
        """A process an earlier trial started now serves this one: only what it and its
        descendants use from now on counts (seel/deployments.py)."""
        trial = self._trials.get(trial_id)
        if trial is None:
            return
        procs = proctree.usage_snapshot()  # the whole tree: what it used so far is not the trial's
        known = set(trial.procs)
        if pid in procs:
            trial.procs[pid] = _Proc(procs[pid].proc.ticks, procs[pid].proc.ppid)
        self._sample_trial(trial, procs)
        trial.before += sum(p.cpu for pid, p in trial.procs.items() if pid not in known)

    def measure(self, trial_id: str) -> None:
        """Sample a trial's processes now (before they are reaped)."""
        trial = self._trials.get(trial_id)
        if trial is not None:
            self._sample_trial(trial, proctree.usage_snapshot())

    def trial_finished(self, trial_id: str) -> TrialUsage | None:
        trial = self._trials.pop(trial_id, None)
        if trial is None:
            return None
        self._sample_trial(trial, proctree.usage_snapshot())
        trial.retired += sum(trial.unsettled.values())  # no later sample will find them
        live = sum(p.cpu for p in trial.procs.values())
        return TrialUsage(
            machine_load=trial.load_sum / trial.load_n if trial.load_n else None,
            cpu_s=max(0.0, trial.retired + live - trial.before),
            peak_rss_mb=trial.peak_rss / 2**20,
            elapsed_s=time.monotonic() - trial.started,
            cpu_pressure=trial.pressure_sum / trial.pressure_n if trial.pressure_n else None,
        )

    # -- sampling -------------------------------------------------------------------------

    @staticmethod
    def _sample_trial(trial: _Trial, procs: dict[int, proctree.Usage]) -> None:
        """Bring a trial's processes up to `procs` (one pass over /proc).

        1. Its descendants not yet counted join: what its processes started, in their sessions or
           in sessions of their own, running or ended and not yet reaped.
        2. Each process's CPU (its own and its reaped children's) and memory is read.
        3. A process that has ended (reaped) leaves. Its CPU, as last read, went either into its
           nearest remaining ancestor's children's CPU (reaped along a chain of the trial's
           processes) or nowhere we read (it outlived its parent and another reaped it: then it
           is `retired`). The ancestor's growth in children's CPU since the last read tells which;
           what it does not cover yet waits one more read (`unsettled`), since the ancestor may
           have been read just before it reaped.
        """
        here = {
            pid: procs[pid]
            for pid, p in trial.procs.items()
            if pid in procs and procs[pid].proc.ticks == p.ticks
        }
        children: dict[int, list[proctree.Usage]] = {}
        for usage in procs.values():
            children.setdefault(usage.proc.ppid, []).append(usage)
        todo = list(here)
        while todo:
            for child in children.get(todo.pop(), ()):
                if child.proc.pid not in here:
                    here[child.proc.pid] = child
                    trial.procs[child.proc.pid] = _Proc(child.proc.ticks, child.proc.ppid)
                    todo.append(child.proc.pid)
        growth: dict[int, float] = {}
        for pid, usage in here.items():
            p = trial.procs[pid]
            growth[pid] = max(0.0, usage.children_cpu_s - p.children_cpu)
            p.ppid = usage.proc.ppid
            p.cpu = max(p.cpu, usage.cpu_s + usage.children_cpu_s)
            p.children_cpu = usage.children_cpu_s
            p.rss = float(usage.rss_bytes)
        unsettled, trial.unsettled = trial.unsettled, {}
        for ancestor, cpu in unsettled.items():
            covered = min(cpu, growth.get(ancestor, 0.0))
            if ancestor in growth:
                growth[ancestor] -= covered
            trial.retired += cpu - covered
        gone = [pid for pid in trial.procs if pid not in here]
        for pid in gone:
            ancestor, seen = trial.procs[pid].ppid, {pid}
            while ancestor in trial.procs and ancestor not in here and ancestor not in seen:
                seen.add(ancestor)
                ancestor = trial.procs[ancestor].ppid
            cpu = trial.procs[pid].cpu
            if ancestor not in here:
                trial.retired += cpu
                continue
            covered = min(cpu, growth[ancestor])
            growth[ancestor] -= covered
            if cpu > covered:
                trial.unsettled[ancestor] = trial.unsettled.get(ancestor, 0.0) + cpu - covered
        for pid in gone:
            del trial.procs[pid]
        trial.peak_rss = max(trial.peak_rss, sum(p.rss for p in trial.procs.values()))

    def _own_cpu(self) -> float:
        t = self._me.cpu_times()
        return t.user + t.system

    def sample(self) -> None:
        """One tick: the machine's load over the last tick, then every running trial."""
        now, own = time.monotonic(), self._own_cpu()
        span = max(now - self._last_at, 1e-6)
        self.own = (own - self._last_own) / span
        self._last_own, self._last_at = own, now
        stall, pressure = read_pressure(self._pressure_path), None
        if stall is not None and self._last_stall is not None:
            pressure = min(1.0, max(0.0, (stall - self._last_stall) / span))
            self.pressures.append(pressure)
        self._last_stall = stall
        now_cpu = psutil.cpu_times()
        total = sum(now_cpu) - sum(self._last_cpu)
        idle = (now_cpu.idle + getattr(now_cpu, "iowait", 0.0)) - (
            self._last_cpu.idle + getattr(self._last_cpu, "iowait", 0.0)
        )
        self._last_cpu = now_cpu
        if total > 0:
            self.load = min(1.0, max(0.0, 1.0 - idle / total))
            self.recent.append(self.load)
        self.available_mb = psutil.virtual_memory().available / 2**20
        procs = proctree.usage_snapshot() if self._trials else {}
        for trial in self._trials.values():
            self._sample_trial(trial, procs)
            trial.load_sum += self.load
            trial.load_n += 1
            if pressure is not None:
                trial.pressure_sum += pressure
                trial.pressure_n += 1
        for callback in self.on_tick:
            callback()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.sample()

    def start(self) -> None:
        """Sample every tick from now until `aclose`."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def busy(self) -> float:
        """The machine's busy fraction over the last second."""
        return sum(self.recent) / len(self.recent) if self.recent else self.load

    @property
    def pressure(self) -> float | None:
        """CPU pressure over the last two seconds (None where the kernel does not report it)."""
        return sum(self.pressures) / len(self.pressures) if self.pressures else None


class AutoParallel:
    """Decides how many trials may run at once; see the module."""

    def __init__(
        self,
        meter: LoadMeter,
        *,
        cap: int = 64,
        target: float = 0.75,
        min_share: float = 0.25,
        probe_below: float = 0.5,
        settle_s: float = 2.0,
        stagger_s: float = 0.25,
        pressure_target: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.meter = meter
        self.cap = max(1, cap)
        self.target = target
        self.min_share = min_share
        self.probe_below = probe_below
        self.settle_s = settle_s
        self.stagger_s = stagger_s
        self.pressure_target = pressure_target
        self.clock = clock
        self.rates: deque[float] = deque(maxlen=20)  # cores one trial keeps busy, on average
        self.lives: deque[float] = deque(maxlen=20)  # how long a trial lasts
        self.peaks_mb: deque[float] = deque(maxlen=20)
        self.probe_limit = 1
        self.pressure_limit = 1  # what CPU pressure allows (once the kernel has reported some)
        self._last_start = -math.inf
        self._last_probe = -math.inf
        self._last_pressure_step = -math.inf
        self.changed = asyncio.Event()
        meter.on_tick.append(self.changed.set)

    def learn(self, cpu_s: float | None, elapsed_s: float, peak_rss_mb: float | None) -> None:
        """Take what a finished trial cost (nothing if it was not measured)."""
        if cpu_s is not None and elapsed_s > 0:
            self.rates.append(cpu_s / elapsed_s)
            self.lives.append(elapsed_s)
        if peak_rss_mb is not None:
            self.peaks_mb.append(peak_rss_mb)

    def model_limit(self, running: int) -> int:
        """How many trials fit beside the rest of the machine's load, from what trials cost."""
        if not self.rates:
            now = self.clock()
            if running >= self.probe_limit and now - self._last_probe >= self.settle_s:
                if self.meter.busy < self.probe_below:
                    self.probe_limit = running + 1
                    self._last_probe = now
            return min(self.cap, self.probe_limit)
        rate = max(statistics.median(self.rates), 0.01)
        ours = running * rate + self.meter.own  # the trials, and the controller driving them
        others = max(0.0, self.meter.busy * self.meter.cores - ours)
        budget = max(self.target * self.meter.cores - others, self.min_share * self.meter.cores)
        fit = math.floor(budget / rate)
        if self.peaks_mb:
            spare = self.meter.available_mb - 512.0  # keep half a gigabyte for everyone else
            fit = min(fit, running + math.floor(spare / max(max(self.peaks_mb), 1.0)))
        return max(1, min(self.cap, fit))

    def limit(self, running: int) -> int:
        """How many trials may run at once now: the model's limit, and what CPU pressure allows."""
        model = self.model_limit(running)
        pressure = self.meter.pressure
        if pressure is None:
            return model
        now = self.clock()
        if now - self._last_pressure_step >= self.settle_s:
            if pressure > self.pressure_target:
                floor = math.floor(self.min_share * self.meter.cores)
                self.pressure_limit = max(1, floor, running - max(1, running // 4))
                self._last_pressure_step = now
            elif pressure < self.pressure_target / 2 and running >= self.pressure_limit:
                self.pressure_limit = running + max(1, running // 2)
                self._last_pressure_step = now
        return max(1, min(model, self.pressure_limit))

    def may_start(self, running: int) -> bool:
        """Whether one more trial may start now, with `running` running."""
        if running == 0:
            return True
        if running >= self.limit(running):
            return False
        # Spaced by stagger_s, or by a tenth of a trial's life when trials are shorter than that.
        stagger = (
            min(self.stagger_s, statistics.median(self.lives) / 10)
            if self.lives
            else self.stagger_s
        )
        return self.clock() - self._last_start >= stagger

    def started(self) -> None:
        self._last_start = self.clock()
