"""The controller itself killed: SIGINT, SIGTERM and SIGKILL at random moments, each followed by a
resume of the same run directory, until a last resume runs the sweep to its end.

Then every trial of the grid has exactly one final record in the ledger (an `interrupted` line
before it is allowed: that trial was stopped by a signal and run again), results.parquet has one
row per trial and party, and no process is left: no pid of any process ledger seen along the way
(a resume truncates it, so it is read before each start) and nothing in any of their process
groups. A controller stopped by SIGINT or SIGTERM exits 130 or 143 within 5 s, its children
stopped by then; one stopped by SIGKILL leaves its children to the resume, which must stop them
before it starts the sweep again.

The children are the fake FL processes behind a shell that ignores SIGHUP and leaves a helper
process in the child's group (as a process that outlives its terminal would), so a SIGKILLed
controller does leave strays. The moments are drawn from a seeded random generator: set
SEEL_KILLS_SEED to replay a failure (the seed is printed, and shown with a failure).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.reliability.kit import (
    SLACK_S,
    Events,
    SpawnLog,
    assert_each_trial_final_once,
    assert_nothing_left,
    pid_alive,
    proc_docs,
    processes_in_groups,
    processes_mentioning,
    spawned,
)
from tests.test_trial_fake import write_sweep

Recovery = Callable[[str, float], None]
SEEL = [sys.executable, "-m", "seel.cli"]
EVENT_TIMEOUT_S = 60.0  # a busy machine: interpreters start slowly
# Ignore SIGHUP (a child that outlives its terminal) and leave a helper in the child's group.
WRAPPER = ["sh", "-c", 'trap \'\' HUP; sleep 120 & exec "$0" "$@"']
PARAMETERS = {
    "fake.args": {"values": ["--rounds 1 --ready-after 0.2", "--rounds 3 --ready-after 0.4"]},
    "party[1].fake.args": {"values": ["", "--ignore-term"]},
}
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
EXIT_BY_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path: Path) -> Iterator[None]:
    """Whatever a failed test leaves running is killed, by pid, rather than left to the next."""
    yield
    for pid, _ in processes_mentioning(str(tmp_path)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def sweep_file(
    tmp_path: Path, repeats: int, party_args: tuple[str, str] = ("", "")
) -> tuple[Path, list[str]]:
    """A sweep of 4 x `repeats` trials of the fake, two at a time; returns it and its trial ids."""
    path = write_sweep(tmp_path, "builtin", parameters=PARAMETERS, party_args=party_args)
    doc = json.loads(path.read_text())
    for role in ("aggregator", "party"):
        doc["engine"][role]["command"] = [*WRAPPER, *doc["engine"][role]["command"]]
    doc.update(parallel=2, repeats=repeats)
    path.write_text(json.dumps(doc, indent=2))
    return path, [f"t{i:05d}" for i in range(4 * repeats)]


@dataclass(frozen=True)
class Moment:
    """When to signal: after the controller's `line`-th event, then after `delay_s` more.

    Never before its first event (`sweep_started`): that is the controller saying it runs, with
    its handlers installed. Earlier, the signal may land in the interpreter's own start-up
    (site.py and the .pth files it runs), before any code of SEEL: Python then exits 1, or
    reports the KeyboardInterrupt and goes on.
    """

    sig: signal.Signals
    line: int
    delay_s: float


def moments(rng: random.Random, n: int) -> list[Moment]:
    """n signals, as many of each kind as n allows, in random order at random moments."""
    kinds = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL] * (n // 3 + 1)
    picked = kinds[:n]
    rng.shuffle(picked)
    out = []
    for sig in picked:
        early = rng.random() < 0.15  # while the first trials start
        line = 1 if early else rng.randint(1, 30)
        out.append(Moment(sig, line, rng.uniform(0.0, 0.6 if early else 0.4)))
    return out


class Controller:
    """One `seel run --json` on the run directory."""

    def __init__(self, tmp_path: Path, sweep: Path, run_dir: Path) -> None:
        self.stderr_path = tmp_path / f"stderr-{time.monotonic_ns()}.txt"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [*SEEL, "run", str(sweep), "--out", str(run_dir), "--json"],
                cwd=tmp_path,
                env={**os.environ, "SEEL_PORTS_DIR": str(tmp_path / "ports")},
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self.started = time.monotonic()
        assert self.proc.stdout is not None
        self.events = Events(self.proc.stdout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def sweep_started(self) -> dict[str, Any]:
        """Its `sweep_started` event, read if not yet seen; fails if it ends without one."""
        seen = [e for e in self.events.seen if e["event"] == "sweep_started"]
        started = seen[0] if seen else self.events.until("sweep_started", EVENT_TIMEOUT_S)
        assert started is not None, self.stderr()
        return started

    def finish(self, timeout_s: float) -> int:
        """Read what is left of its output and wait for its exit; returns its exit status."""
        self.events.rest(timeout_s)
        return self.proc.wait(timeout_s)

    def close(self) -> None:
        """Kill it if a failed assertion left it running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def run_with_interrupts(
    tmp_path: Path, repeats: int, plan: list[Moment], recovery: Recovery, seed: int
) -> None:
    sweep, trial_ids = sweep_file(tmp_path, repeats)
    run_dir = tmp_path / "run"
    spawns = SpawnLog(run_dir)
    strays: list[tuple[int, int]] = []  # what the last SIGKILLed controller left
    for n, moment in enumerate([*plan, None], 1):
        where = f"seed {seed}, step {n} of {len(plan) + 1}: {moment}"
        spawns.snapshot()  # before the resume truncates the process ledger
        with contextlib.closing(Controller(tmp_path, sweep, run_dir)) as controller:
            if strays:
                # The resume stops what the killed controller left before it starts the sweep.
                controller.sweep_started()
                recovery(
                    "controller SIGKILL: resume until its strays are stopped",
                    time.monotonic() - controller.started,
                )
                assert_nothing_left(strays)
            if moment is None:
                pending = controller.sweep_started()["pending"]
                print(f"left for the last resume: {pending} of {len(trial_ids)}")
                status = controller.finish(240)
                assert status == 0, f"{where}: exit {status}: {controller.stderr()}"
                break
            interrupt(controller, moment, recovery, where)
        strays = spawns.snapshot() if moment.sig == signal.SIGKILL else []
        if moment.sig != signal.SIGKILL:
            assert_nothing_left(spawned(proc_docs(run_dir)))  # stopped before it exited

    spawns.snapshot()
    finals = assert_each_trial_final_once(run_dir, trial_ids)
    failed = {
        t: (d["status"], d["phase"], d["reason"]) for t, d in finals.items() if d["status"] != "ok"
    }
    assert not failed, f"seed {seed}: {failed}"
    results = pl.read_parquet(run_dir / "results.parquet")
    assert results.height == 2 * len(trial_ids), f"seed {seed}"
    assert sorted(results["trial_id"].unique()) == trial_ids
    assert set(results["status"]) == {"ok"}
    for row in results.filter(pl.col("party") == 0).iter_rows(named=True):
        final = finals[row["trial_id"]]
        assert (row["attempts"], row["elapsed_s"]) == (final["attempts"], final["elapsed_s"])
    assert pl.read_csv(run_dir / "results.csv").height == results.height
    assert_nothing_left(spawns.pairs())
    # A controller killed between spawning a child and recording it leaves no spawn line; the
    # resume finds such a child by the run's mark in its environment.
    unrecorded = processes_mentioning(str(tmp_path))
    for pid, _ in unrecorded:
        os.kill(pid, signal.SIGKILL)
    assert not unrecorded, f"seed {seed}: left, in no group of the process ledgers"


def interrupt(controller: Controller, moment: Moment, recovery: Recovery, where: str) -> None:
    """Signal the controller at the moment and check how it ended."""
    while len(controller.events.seen) < moment.line:
        doc = controller.events.next(EVENT_TIMEOUT_S)
        assert doc is not None, f"{where}: the sweep ended before the signal: grid too small"
    time.sleep(moment.delay_s)  # the fault: a random moment after the event, not a wait for one
    assert controller.proc.poll() is None, (
        f"{where}: ended before the signal: {controller.stderr()}"
    )
    signalled = time.monotonic()
    controller.proc.send_signal(moment.sig)
    status = controller.finish(60)
    took = time.monotonic() - signalled
    expected = EXIT_BY_SIGNAL[moment.sig]
    if moment.sig == signal.SIGKILL:
        assert status == expected, f"{where}: exit {status}"
        return
    assert status == expected, f"{where}: exit {status}: {controller.stderr()}"
    assert f"seel: {moment.sig.name}: stopping every trial" in controller.stderr(), where
    recovery(f"controller {moment.sig.name}: signal to exit, children stopped", took)
    assert took <= SLACK_S, f"{where}: took {took:.1f} s to stop"


def seeded() -> int:
    seed = int(os.environ.get("SEEL_KILLS_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"SEEL_KILLS_SEED={seed}")
    return seed


@pytest.mark.slow
def test_each_signal_once_then_resume_loses_nothing(tmp_path: Path, recovery: Recovery) -> None:
    seed = seeded()
    rng = random.Random(seed)
    run_with_interrupts(tmp_path, 5, moments(rng, 3), recovery, seed)


@pytest.mark.reliability_full
def test_twenty_random_kills_and_resumes_lose_nothing(tmp_path: Path, recovery: Recovery) -> None:
    seed = seeded()
    rng = random.Random(seed)
    run_with_interrupts(tmp_path, 16, moments(rng, 20), recovery, seed)


@contextlib.contextmanager
def adopting_orphans() -> Iterator[None]:
    """Make this process the reaper of its descendants' orphans (PR_SET_CHILD_SUBREAPER), so
    that the test, not init, decides when a killed controller's children are reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def reap(pids: Iterable[int], timeout_s: float = 30.0) -> None:
    """Wait for each adopted orphan to end, and reap it."""
    left = set(pids)
    deadline = time.monotonic() + timeout_s
    while left:
        for pid in list(left):
            with contextlib.suppress(ChildProcessError):  # not ours: nothing to reap
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue
            left.discard(pid)
        assert time.monotonic() < deadline, f"still running: {sorted(left)}"
        if left:
            time.sleep(0.01)


@pytest.mark.slow
def test_resume_stops_what_outlived_a_killed_controllers_children(
    tmp_path: Path, recovery: Recovery
) -> None:
    sweep, trial_ids = sweep_file(tmp_path, 1)
    run_dir = tmp_path / "run"
    with adopting_orphans():
        with contextlib.closing(Controller(tmp_path, sweep, run_dir)) as first:
            # At the start phase every child has printed its first line: each shell has forked
            # its helper and become the child's program.
            while (doc := first.events.until("phase", EVENT_TIMEOUT_S)) and doc["phase"] != "start":
                pass
            assert doc is not None, first.stderr()
            first.proc.kill()
            assert first.finish(60) == -9
        strays = SpawnLog(run_dir).snapshot()
        reap(pid for pid, _ in strays)  # the children are gone: only their groups are left
        helpers = processes_in_groups({pgid for _, pgid in strays})
        assert helpers, "nothing outlived the controller"
        with contextlib.closing(Controller(tmp_path, sweep, run_dir)) as resume:
            resume.sweep_started()
            recovery(
                "controller SIGKILL: resume until its strays are stopped",
                time.monotonic() - resume.started,
            )
            assert_nothing_left(strays)
            assert resume.finish(120) == 0, resume.stderr()
        reap(pid for pid, _, _ in helpers)
    assert_each_trial_final_once(run_dir, trial_ids)
    assert_nothing_left(spawned(proc_docs(run_dir)))
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.parametrize(
    "sig",
    [
        pytest.param(signal.SIGINT, id="SIGINT"),
        pytest.param(signal.SIGTERM, id="SIGTERM", marks=pytest.mark.reliability_full),
    ],
)
def test_signal_during_the_resumes_stray_cleanup(
    tmp_path: Path, recovery: Recovery, sig: signal.Signals
) -> None:
    # party0 sleeps before its first line and ignores SIGTERM, so it outlives a SIGKILLed
    # controller, and the resume's cleanup waits out its grace period before it SIGKILLs it.
    sweep, _ = sweep_file(tmp_path, 1, party_args=("--ready-after 60 --ignore-term", ""))
    run_dir = tmp_path / "run"
    with contextlib.closing(Controller(tmp_path, sweep, run_dir)) as first:
        assert first.events.until("phase", EVENT_TIMEOUT_S) is not None, first.stderr()
        first.proc.kill()
        assert first.finish(60) == -9
    strays = SpawnLog(run_dir).snapshot()
    assert any(pid_alive(pid) for pid, _ in strays), "no stray to clean up"
    with contextlib.closing(Controller(tmp_path, sweep, run_dir)) as resume:
        # The resume holds the run directory (its pid is in the lock) and is stopping the strays.
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while (run_dir / ".lock").read_text() != str(resume.proc.pid):
            assert time.monotonic() < deadline and resume.proc.poll() is None, resume.stderr()
            time.sleep(0.01)
        signalled = time.monotonic()
        resume.proc.send_signal(sig)
        status = resume.finish(60)
        took = time.monotonic() - signalled
        assert status == EXIT_BY_SIGNAL[sig], f"exit {status}: {resume.stderr()}"
        assert "Traceback" not in resume.stderr(), resume.stderr()
        assert [e["event"] for e in resume.events.seen] == []  # it started no trial
    recovery(f"controller {sig.name} during the resume's stray cleanup: signal to exit", took)
    assert took <= SLACK_S, f"took {took:.1f} s"
    assert_nothing_left(strays)
    assert processes_mentioning(str(tmp_path)) == []
