"""Benchmarks of the controller, `seel run`: throughput against the paper's tmux driver, the delay
from a marker to the next command, its own CPU per trial, and its memory from 75 to 5,050 trials.

    python bench/controller.py [--baseline-trials N] [--small-trials N] [--big-trials N] [--parallel N]

1. Throughput: bench/paper_driver.sh (the paper's Listings 1 and 2 on the built-in engine) runs
   the first N trials of Table I; `seel run sweeps/paper-table1.yml` runs all 75, as shipped
   (processes forked from a warm interpreter) and once more with `preload: []` (each process
   started cold, as the driver starts them).
2. Marker to command: every child transcript (`trials/*/NAME.log`) stamps each line with the
   controller's monotonic clock when it was read, relative to that child's spawn, and notes every
   line sent. Only pairs within one transcript are compared, where the marker alone completed the
   step before the send: aggregator "Finished Global Training" -> EVAL, aggregator "Finished eval
   requests" -> STOP (the parties print their metrics before that marker), and party "Party start successful" -> REGISTER (REGISTER waits for both
   parties, so per trial the party whose marker came last, the smaller delay, is the one taken).
3. Controller CPU: user+sys of the `seel run` process itself. The rusage that wait4 returns
   includes the children it reaped (every aggregator and party), so the figure is read from
   /proc/PID/stat while the process is a zombie (waitid with WNOWAIT), before it is reaped.
4. Memory: VmRSS of `seel run` sampled every 0.5 s, on a fake engine (bench/fake_fl.py: the built-in
   lifecycle and markers, answered at once) with one swept parameter of 75 values, then 5,050.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.flkit import free_ports

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SEEL = Path(sys.executable).parent / "seel"
TABLE1 = ROOT / "sweeps" / "paper-table1.yml"
TABLE1_TRIALS = 75
SHIPPED_CONFIGS = ROOT / "sweeps" / "configs" / "builtin"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TRANSCRIPT_LINE = re.compile(r"^\s*(\d+\.\d+) (.*)$")
PROGRESS = re.compile(rb"^\[ *(\d+)/\d+\]", re.M)


@dataclass(frozen=True)
class Sample:
    """One look at a running `seel run`: when, its VmRSS, and how many trials it had finished."""

    t_s: float
    rss_mb: float
    done: int


@dataclass
class Watched:
    """What one `seel run` cost: wall time, its own CPU, its children's CPU and its memory."""

    exit_code: int
    wall_s: float
    self_cpu_s: float
    children_cpu_s: float
    wait4_cpu_s: float
    wait4_maxrss_mb: float
    samples: list[Sample] = field(default_factory=list)

    @property
    def peak_rss_mb(self) -> float:
        return max((s.rss_mb for s in self.samples), default=float("nan"))

    def at(self, done: int) -> Sample | None:
        """The first sample taken once `done` trials had finished, else the last sample."""
        return next((s for s in self.samples if s.done >= done), self.samples[-1] if self.samples else None)

    def before_results(self) -> Sample | None:
        """The last sample taken before the last trial finished (results are written after it)."""
        total = max((s.done for s in self.samples), default=0)
        return next((s for s in reversed(self.samples) if s.done < total), None)


def _rss_mb(pid: int) -> float | None:
    """VmRSS of a live process, in MB (None once it has exited)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def _trials_done(log: Path) -> int:
    """The last "[K/N]" progress count in the tail of `seel run`'s output (0 before the first)."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            found = PROGRESS.findall(f.read())
    except OSError:
        return 0
    return int(found[-1]) if found else 0


def _stat_cpu_s(pid: int) -> tuple[float, float]:
    """(own user+sys, reaped children's user+sys) of a process, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def watch(argv: Sequence[str], log: Path, every_s: float = 0.5) -> Watched:
    """Run `argv` to its end, sampling its RSS and progress every `every_s`; read its own CPU time."""
    samples: list[Sample] = []
    done = threading.Event()
    t0 = time.perf_counter()
    with log.open("wb") as out:
        # unbuffered, so that its "[K/N]" progress lines reach the log as trials finish
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def sample() -> None:
        while not done.is_set():
            rss = _rss_mb(proc.pid)
            if rss is not None:
                samples.append(Sample(time.perf_counter() - t0, rss, _trials_done(log)))
            done.wait(every_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - t0
        self_cpu, children_cpu = _stat_cpu_s(proc.pid)  # a zombie: its times are final
    finally:
        done.set()
        sampler.join()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Watched(
        exit_code=proc.returncode,
        wall_s=wall,
        self_cpu_s=self_cpu,
        children_cpu_s=children_cpu,
        wait4_cpu_s=usage.ru_utime + usage.ru_stime,
        wait4_maxrss_mb=usage.ru_maxrss / 1024,
        samples=samples,
    )


def seel_run(sweep: Path, out: Path, parallel: int) -> Watched:
    """`seel run SWEEP --parallel N --out OUT`, watched; its output goes to OUT.log."""
    argv = [str(SEEL), "run", str(sweep), "--parallel", str(parallel), "--out", str(out)]
    watched = watch(argv, out.with_suffix(".log"))
    if watched.exit_code != 0:
        tail = out.with_suffix(".log").read_text(errors="replace").splitlines()[-15:]
        sys.exit(f"seel run {sweep.name} exited with {watched.exit_code}:\n" + "\n".join(tail))
    return watched


# -- 1. the paper's driver ------------------------------------------------------------------------


def cold_table1(folder: Path) -> Path:
    """Table I with the fork server off: every process a cold `python -m` start."""
    folder.mkdir(parents=True, exist_ok=True)
    text = TABLE1.read_text().replace("engine: builtin", "engine: {extends: builtin, preload: []}")
    text = text.replace("configs/builtin/", f"{TABLE1.parent}/configs/builtin/")
    path = folder / "paper-table1-cold.yml"
    path.write_text(text)
    return path


def paper_driver(work: Path, trials: int) -> tuple[float, int]:
    """Run the paper's driver on the first `trials` Table I trials: (wall seconds, rows logged)."""
    argv = ["bash", str(BENCH / "paper_driver.sh"), str(work), sys.executable, str(trials),
            *map(str, free_ports(3))]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=60 * trials + 60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.communicate()
        subprocess.call(["tmux", "-L", f"seel-paper-{proc.pid}", "kill-server"], stderr=subprocess.DEVNULL)
        sys.exit(f"the paper's driver did not finish {trials} trials in time")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"the paper's driver exited with {proc.returncode}:\n{err}")
    rows = (work / "log.csv").read_text().splitlines()[1:]
    if len(rows) != 2 * trials or any(", , " in r or r.endswith(", ") for r in rows):
        sys.exit("the paper's driver logged incomplete metrics:\n" + "\n".join(rows))
    return wall, len(rows)


# -- 2. marker to command -------------------------------------------------------------------------


def transcript(path: Path) -> list[tuple[float, str]]:
    """(seconds since spawn, text) for every line of a child transcript."""
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        match = TRANSCRIPT_LINE.match(raw)
        if match:
            lines.append((float(match.group(1)), match.group(2)))
    return lines


def marker_to_send(lines: list[tuple[float, str]], marker: str, sent: str) -> float | None:
    """Seconds from the line with `marker` to the first `sent` note after it."""
    seen = None
    for t, text in lines:
        if seen is None and marker in text and not text.startswith("# seel:"):
            seen = t
        elif seen is not None and text == f"# seel: sent {sent!r}":
            return t - seen
    return None


def marker_latencies(trials_dir: Path) -> dict[str, list[float]]:
    """Per kind of pair, one delay in seconds per trial."""
    pairs: dict[str, list[float]] = {"Finished Global Training -> EVAL": [],
                                     "Finished eval requests -> STOP": [],
                                     "Party start successful -> REGISTER": []}
    for trial in sorted(trials_dir.iterdir()):
        agg = transcript(trial / "aggregator.log")
        for name, (marker, sent) in (("Finished Global Training -> EVAL", ("Finished Global Training", "EVAL")),
                                     ("Finished eval requests -> STOP", ("Finished eval requests", "STOP"))):
            delay = marker_to_send(agg, marker, sent)
            if delay is not None:
                pairs[name].append(delay)
        party = [marker_to_send(transcript(p), "Party start successful", "REGISTER")
                 for p in sorted(trial.glob("party*.log"))]
        if party and all(d is not None for d in party):
            pairs["Party start successful -> REGISTER"].append(min(d for d in party if d is not None))
    return pairs


# -- 4. a fake engine for thousands of trials -----------------------------------------------------


def fake_sweep(folder: Path, values: int, cpus_per_trial: float = 1) -> Path:
    """A sweep over `values` values of max_timeout on the fake engine, with its configs beside it
    (each trial holding `cpus_per_trial` when it runs on Ray)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config_agg.yml", "config_party0.yml", "config_party1.yml"):
        shutil.copy(SHIPPED_CONFIGS / name, folder / name)
    script = BENCH / "fake_fl.py"
    sweep = folder / f"fake-{values}.yml"
    sweep.write_text(
        f"""name: fake-{values}
engine:
  extends: builtin
  name: fake
  description: bench/fake_fl.py, the built-in lifecycle and markers answered at once
  cpus_per_trial: {cpus_per_trial}
  check: ["{{python}}", "-I", "-S", "-c", "pass"]
  validate: null
  aggregator:
    command: ["{{python}}", "-I", "-S", "{script}", "aggregator", "{{config}}"]
    stop_line: STOP
    port_keys: [connection.info.port]
  party:
    command: ["{{python}}", "-I", "-S", "{script}", "party", "{{config}}"]
    port_keys: [connection.info.port]
    aggregator_port_keys: [aggregator.port]
    stop_line: null
configs:
  aggregator: config_agg.yml
  parties: [config_party0.yml, config_party1.yml]
parameters:
  hyperparams.global.max_timeout: {{min: 0, max: {values - 1}, step: 1}}
""",
        encoding="utf-8",
    )
    return sweep


# -- report ---------------------------------------------------------------------------------------


def per_min(trials: int, seconds: float) -> float:
    return trials / seconds * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-trials", type=int, default=4, help="Table I trials for the paper's driver")
    parser.add_argument("--small-trials", type=int, default=75, help="trials of the small fake-engine sweep")
    parser.add_argument("--big-trials", type=int, default=5050, help="trials of the big fake-engine sweep")
    parser.add_argument("--parallel", type=int, default=2)
    args, _ = parser.parse_known_args()  # bench/run.py passes every bench the same options
    if shutil.which("tmux") is None:
        sys.exit("tmux is needed for the paper's driver")

    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="seel-bench-") as d:
        tmp = Path(d)
        print(f"controller: paper's driver on {args.baseline_trials} trials ...", file=sys.stderr, flush=True)
        base_wall, _ = paper_driver(tmp / "paper", args.baseline_trials)
        print(f"controller: seel run on Table I ({TABLE1_TRIALS} trials) ...", file=sys.stderr, flush=True)
        table1 = seel_run(TABLE1, tmp / "table1", args.parallel)
        pairs = marker_latencies(tmp / "table1" / "trials")
        shutil.rmtree(tmp / "table1")
        print("controller: seel run on Table I, processes started cold ...", file=sys.stderr, flush=True)
        cold = seel_run(cold_table1(tmp / "cold"), tmp / "table1-cold", args.parallel)
        shutil.rmtree(tmp / "table1-cold")
        print(f"controller: fake engine, {args.small_trials} then {args.big_trials} trials ...",
              file=sys.stderr, flush=True)
        small = seel_run(fake_sweep(tmp / "fake", args.small_trials), tmp / "fake-small", args.parallel)
        shutil.rmtree(tmp / "fake-small")
        big = seel_run(fake_sweep(tmp / "fake", args.big_trials), tmp / "fake-big", args.parallel)

    load_end = os.getloadavg()[0]
    print(f"controller: load average (1 min) at start {load_start:.2f}, at end {load_end:.2f} on {os.cpu_count()} CPUs")
    base_rate = per_min(args.baseline_trials, base_wall)
    seel_rate = per_min(TABLE1_TRIALS, table1.wall_s)
    print(f"controller: paper's tmux driver (Listings 1-2), first {args.baseline_trials} Table I trials: "
          f"{base_rate:.1f} trials/min ({base_wall / args.baseline_trials:.2f} s per trial)")
    print(f"controller: seel run paper-table1 --parallel {args.parallel}, {TABLE1_TRIALS} trials: "
          f"{seel_rate:.1f} trials/min ({table1.wall_s:.1f} s)")
    print(f"controller: throughput ratio seel / paper's driver: {seel_rate / base_rate:.1f}x   (target >= 20x)")
    cold_rate = per_min(TABLE1_TRIALS, cold.wall_s)
    print(f"  with every process started cold (preload: []): {cold_rate:.1f} trials/min "
          f"({cold.wall_s:.1f} s), {cold_rate / base_rate:.1f}x the driver")

    delays = [d for values in pairs.values() for d in values]
    print(f"controller: marker seen to next command sent, median of {len(delays)}: "
          f"{statistics.median(delays) * 1000:.1f} ms, mean {statistics.mean(delays) * 1000:.2f} ms, "
          f"max {max(delays) * 1000:.1f} ms   (target <= 5 ms; transcript stamps have 1 ms steps)")
    for name, values in pairs.items():
        print(f"  {name:<36} median {statistics.median(values) * 1000:4.1f} ms, "
              f"mean {statistics.mean(values) * 1000:5.2f} ms, max {max(values) * 1000:4.1f} ms (n={len(values)})")

    print(f"controller: CPU of seel run itself per trial, paper-table1: "
          f"{table1.self_cpu_s / TABLE1_TRIALS * 1000:.1f} ms   (target <= 50 ms)")
    print(f"  own {table1.self_cpu_s:.2f} s, its children {table1.children_cpu_s:.2f} s, "
          f"wait4's rusage (own + reaped children) {table1.wait4_cpu_s:.2f} s")
    print(f"controller: CPU of seel run itself per trial, fake engine: "
          f"{small.self_cpu_s / args.small_trials * 1000:.1f} ms ({args.small_trials} trials), "
          f"{big.self_cpu_s / args.big_trials * 1000:.1f} ms ({args.big_trials} trials)")

    print(f"controller: peak RSS of seel run (VmRSS every 0.5 s): paper-table1 {table1.peak_rss_mb:.1f} MB; "
          f"fake engine {args.small_trials} trials {small.peak_rss_mb:.1f} MB, "
          f"{args.big_trials} trials {big.peak_rss_mb:.1f} MB   (target <= 150 MB)")
    print(f"  exact peak (wait4 ru_maxrss; the fake children are far smaller): "
          f"fake {args.small_trials} trials {small.wait4_maxrss_mb:.1f} MB, "
          f"{args.big_trials} trials {big.wait4_maxrss_mb:.1f} MB")
    marks = sorted({args.small_trials, args.big_trials // 4, args.big_trials // 2, 3 * args.big_trials // 4})
    by_done = {s.done: s for s in (*(big.at(m) for m in marks), big.before_results()) if s is not None}
    seen = sorted(by_done.items())
    shown = ", ".join(f"{done}: {s.rss_mb:.1f} MB" for done, s in seen)
    print(f"controller: RSS of the {args.big_trials}-trial run by trials finished: {shown}")
    if len(seen) >= 2 and seen[-1][0] > seen[0][0]:
        (d0, s0), (d1, s1) = seen[0], seen[-1]
        growth = s1.rss_mb - s0.rss_mb
        print(f"controller: RSS growth from {d0} to {d1} trials finished: {growth:+.1f} MB "
              f"({growth * 1024 / (d1 - d0):.1f} KB per trial)   (target: flat, <= 10 MB)")
    print(f"controller: fake engine throughput: {per_min(args.small_trials, small.wall_s):.0f} trials/min "
          f"({args.small_trials} trials), {per_min(args.big_trials, big.wall_s):.0f} trials/min "
          f"({args.big_trials} trials, {big.wall_s:.0f} s)")
    stretch = max(1, args.big_trials // 5)
    early, late, end = big.at(stretch), big.at(args.big_trials - stretch), big.before_results()
    if early is not None and late is not None and end is not None and end.t_s > late.t_s and early.t_s > 0:
        print(f"  first {stretch} trials {per_min(early.done, early.t_s):.0f} trials/min, "
              f"last {end.done - late.done} trials {per_min(end.done - late.done, end.t_s - late.t_s):.0f} trials/min")


if __name__ == "__main__":
    main()
