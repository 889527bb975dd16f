"""Benchmarks of trials on Ray: the cost per trial against a local run, the controller's ceiling,
and the memory of the Ray processes on the head.

    python bench/ray.py [--repeats N] [--ceiling-trials N] [--ceiling-slots 4,8,16]
                        [--recovery-repeats N] [--sections overhead,ceiling,recovery]

1. Overhead: the paper's Table I grid (75 trials, built-in engine) with `--parallel 2` on this
   machine, and with `--ray local --parallel 2` (a Ray instance of this machine's cores, two
   slots), alternated N times. The rate is trials / the sweep's own elapsed time (its
   `sweep_finished` event: from the first trial to the results tables); the Ray instance's start
   and stop are reported apart. Medians, and Ray's rate over the local rate.
2. The controller's ceiling: a sweep of stand-in trials (bench/fake_fl.py: the built-in lifecycle
   answered at once, stdlib only) through `--ray local` with 4, 8 and 16 slots on the 2 cores
   (`cpus_per_trial: 2 / slots`). Trials per minute the controller records, its own CPU per trial, and
   the CPU of every other process of the run by kind, to name the bottleneck. From the rate, how
   many slots of 30-second trials one controller keeps busy.
3. Memory: the peak VmRSS of each Ray process of the instance (GCS, raylet, workers, the rest)
   sampled every 0.5 s during the Table I sweeps on Ray.
4. Recovery, on a cluster of this machine (a head and three worker nodes, as the tests start it),
   with two trials held in their train phase (tests/raykit.py): Ctrl-C to the controller's exit
   (130); a SIGKILLed controller to the moment no process of the run is left on any node; a node
   removed to its trial's failure reaching the controller, and to that trial's rerun starting on
   another node.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path, and this file would be `ray`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from bench.controller import _stat_cpu_s, fake_sweep  # noqa: E402 (after the path is set)

SEEL = Path(sys.executable).parent / "seel"
TABLE1 = ROOT / "sweeps" / "paper-table1.yml"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcSample:
    kind: str
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    seen: int = 0  # samples it was in (a child between fork and exec looks like its parent once)


@dataclass
class Run:
    """One `seel run --json`: its exit code, wall time, the sweep's own figures and its processes."""

    exit_code: int
    wall_s: float
    elapsed_s: float
    trials: int
    controller_cpu_s: float
    trial_elapsed_s: list[float] = field(default_factory=list)
    procs: dict[int, ProcSample] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.trials / self.elapsed_s * 60

    def by_kind(self) -> dict[str, tuple[float, float, int]]:
        """kind -> (CPU seconds, summed peak RSS in MB, processes)."""
        out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
        for p in self.procs.values():
            row = out[p.kind]
            row[0] += p.cpu_s
            row[1] += p.peak_rss_mb
            row[2] += 1 if p.seen > 1 or p.kind == "trial processes" else 0
        return {k: (v[0], v[1], int(v[2])) for k, v in out.items()}


def _read(pid: int) -> tuple[bytes, str, float, float] | None:
    """(environ, command line, user+sys seconds, VmRSS MB) of a live process."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    rss = next((int(x.split()[1]) / 1024 for x in status.splitlines() if x.startswith("VmRSS:")), 0.0)
    return environ, cmdline, cpu, rss


def _kind(cmdline: str, environ: bytes) -> str:
    if b"SEEL_RUN_ID=" in environ and "ray::" not in cmdline and "default_worker" not in cmdline:
        return "trial processes"
    if "gcs_server" in cmdline:
        return "gcs_server"
    if "raylet" in cmdline.split(" ")[0]:
        return "raylet"
    if cmdline.startswith("ray::TrialWorker"):
        return "slot actors (ray::TrialWorker)"
    if cmdline.startswith("ray::") or "default_worker.py" in cmdline:
        return "idle ray workers"
    words = cmdline.split(" ")
    script = next((w for w in words[1:] if w.endswith(".py")), words[0])
    return f"ray: {Path(script).name}"


def run_seel(argv: list[str], cwd: Path, every_s: float = 0.5) -> Run:
    """Run `seel run ... --json`, sampling every process that carries this run's mark."""
    mark = f"SEEL_BENCH_MARK={uuid.uuid4().hex}"
    env = {**os.environ, **dict([mark.split("=", 1)])}
    procs: dict[int, ProcSample] = {}
    done = threading.Event()
    t0 = time.perf_counter()
    out = cwd / f"events-{uuid.uuid4().hex[:6]}.jsonl"
    with out.open("wb") as events:
        proc = subprocess.Popen(
            [str(SEEL), "run", *argv, "--json"],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=events, stderr=subprocess.DEVNULL,
        )

    def sample() -> None:
        needle = mark.encode()
        while not done.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) == proc.pid:
                    continue
                seen = _read(int(entry))
                if seen is None or needle not in seen[0].split(b"\0"):
                    continue
                environ, cmdline, cpu, rss = seen
                p = procs.setdefault(int(entry), ProcSample(""))
                p.kind = _kind(cmdline, environ)  # a worker becomes an actor once placed
                p.seen += 1
                p.cpu_s = max(p.cpu_s, cpu)
                p.peak_rss_mb = max(p.peak_rss_mb, rss)
            done.wait(every_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - t0
        controller_cpu, _ = _stat_cpu_s(proc.pid)  # a zombie: its times are final
    finally:
        done.set()
        sampler.join()
        code = proc.wait()
    docs = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
    finished = next((d for d in docs if d["event"] == "sweep_finished"), None)
    ended = [d for d in docs if d["event"] == "trial_finished" and not d["will_retry"]]
    return Run(
        exit_code=code,
        wall_s=wall,
        elapsed_s=finished["elapsed"] if finished else float("nan"),
        trials=len(ended),
        controller_cpu_s=controller_cpu,
        trial_elapsed_s=[float(d["elapsed"]) for d in ended],
        procs=procs,
    )


def recovery(tmp: Path, repeats: int) -> None:
    """Section 4: recovery times on a multi-node cluster of this machine."""
    import signal

    from tests.raykit import Controller, in_phase, node_of, run_processes, start_cluster, wait_gone
    from tests.raykit import fake_sweep as held

    cluster = start_cluster([{"resources": {"worker": 1}} for _ in range(3)])
    times: dict[str, list[float]] = defaultdict(list)
    try:
        for i in range(repeats):
            for fault in ("ctrl-c", "sigkill", "node"):
                folder = tmp / f"{fault}-{i}"
                folder.mkdir()
                hold = folder / "go"
                sweep = held(folder, [f"--hold-train-until {hold} --rounds {n}" for n in (1, 2, 3)])
                args = [str(sweep), "--ray", cluster.address, "--out", str(folder / "run"), "--parallel", "2"]
                ctl = Controller(args, folder)
                ctl.wait_for(in_phase("train", 2))
                assert ctl.run_id is not None
                t0 = time.perf_counter()
                if fault == "ctrl-c":
                    ctl.signal(signal.SIGINT)
                    code = ctl.finish()
                    times["Ctrl-C: to exit 130, every trial stopped"].append(time.perf_counter() - t0)
                    assert code == 130 and run_processes(ctl.run_id) == []
                elif fault == "sigkill":
                    ctl.signal(signal.SIGKILL)
                    ctl.close()
                    left, took = wait_gone(ctl.run_id, 120)
                    assert left == [], left
                    times["SIGKILL: to no process left on any node"].append(took)
                else:
                    victim = node_of(cluster, run_processes(ctl.run_id)[0])
                    t0 = time.perf_counter()
                    cluster.remove_node(victim, allow_graceful=False)
                    ctl.wait_for(lambda ev: any(e["event"] == "trial_finished" and e["will_retry"] for e in ev))
                    times["node lost: to its trial's failure"].append(time.perf_counter() - t0)
                    ctl.wait_for(lambda ev: any(e["event"] == "trial_started" and e["attempt"] == 2 for e in ev))
                    times["node lost: to the rerun starting"].append(time.perf_counter() - t0)
                    hold.touch()
                    assert ctl.finish() == 0
                    cluster.add_node(num_cpus=1, resources={"worker": 1}, object_store_memory=80 << 20)
                    cluster.wait_for_nodes()
    finally:
        cluster.shutdown()
    print(f"== recovery on a head and three worker nodes, medians of {repeats}")
    for what, values in times.items():
        print(f"  {what:44s} {statistics.median(values):6.2f} s  (max {max(values):.2f})")


def _check(run: Run, what: str) -> Run:
    if run.exit_code != 0:
        raise SystemExit(f"{what}: seel run exited with {run.exit_code}")
    return run


def overhead(tmp: Path, repeats: int) -> None:
    """Sections 1 and 3: Table I locally and on Ray, side by side; Ray's processes."""
    local: list[Run] = []
    on_ray: list[Run] = []
    for i in range(repeats):
        local.append(_check(run_seel(
            [str(TABLE1), "--parallel", "2", "--out", str(tmp / f"local-{i}")], tmp), "local"))
        on_ray.append(_check(run_seel(
            [str(TABLE1), "--ray", "local", "--parallel", "2", "--out", str(tmp / f"ray-{i}")],
            tmp), "ray"))
        print(f"  repeat {i + 1}: local {local[-1].rate:.1f}/min, ray {on_ray[-1].rate:.1f}/min",
              flush=True)
    local_rate = statistics.median(r.rate for r in local)
    ray_rate = statistics.median(r.rate for r in on_ray)
    startup = statistics.median(r.wall_s - r.elapsed_s for r in on_ray)
    local_startup = statistics.median(r.wall_s - r.elapsed_s for r in local)
    print("== Table I (75 trials), two at a time, medians of", repeats)
    print(f"local --parallel 2        {local_rate:7.1f} trials/min")
    print(f"--ray local --parallel 2  {ray_rate:7.1f} trials/min")
    pairs = sorted(r.rate / loc.rate for r, loc in zip(on_ray, local, strict=True))
    print(f"ray / local               {ray_rate / local_rate:7.3f}  (cost {1 - ray_rate / local_rate:.1%}); "
          f"per side-by-side pair: median {statistics.median(pairs):.3f}, range {pairs[0]:.3f}-{pairs[-1]:.3f}")
    print(f"start and stop outside the sweep: ray {startup:.1f} s, local {local_startup:.1f} s")
    print(f"controller CPU per trial: local {statistics.median(r.controller_cpu_s for r in local) / 75 * 1e3:.1f} ms, "
          f"ray {statistics.median(r.controller_cpu_s for r in on_ray) / 75 * 1e3:.1f} ms")
    print("== Ray processes during Table I on Ray (peak VmRSS summed per kind, median run)")
    mid = sorted(on_ray, key=lambda r: r.rate)[len(on_ray) // 2]
    for kind, (cpu, rss, n) in sorted(mid.by_kind().items()):
        if kind != "trial processes":
            print(f"  {kind:32s} {n:3d} proc  {rss:7.1f} MB  CPU {cpu:6.2f} s")
    ray_total = sum(rss for kind, (_, rss, _) in mid.by_kind().items() if kind != "trial processes")
    print(f"  {'all Ray processes':32s}      {ray_total:7.1f} MB")


def ceiling(tmp: Path, trials: int, slots: int) -> None:
    """Section 2: stand-in trials through Ray with `slots` slots on this machine's cores."""
    sweep = fake_sweep(tmp / "fake", trials, 2 / slots)
    run = _check(run_seel(
        [str(sweep), "--ray", "local", "--parallel", str(slots), "--out", str(tmp / "ceiling")],
        tmp), "ceiling")
    per_trial_ms = run.controller_cpu_s / run.trials * 1e3
    print(f"== controller ceiling: {run.trials} stand-in trials, {slots} slots on 2 cores")
    print(f"recorded                  {run.rate:7.1f} trials/min")
    print(f"controller CPU per trial  {per_trial_ms:7.1f} ms  (one core: {60e3 / per_trial_ms:.0f} trials/min)")
    elapsed = run.elapsed_s
    for kind, (cpu, _, n) in sorted(run.by_kind().items(), key=lambda kv: -kv[1][0]):
        print(f"  {kind:32s} {n:4d} proc  CPU {cpu:6.2f} s  ({cpu / elapsed:.0%} of a core)")
    print(f"  {'controller (seel run)':32s}    1 proc  CPU {run.controller_cpu_s:6.2f} s  "
          f"({run.controller_cpu_s / elapsed:.0%} of a core)")
    cycle = slots * 60 / run.rate
    inside = statistics.median(run.trial_elapsed_s)
    print(f"per slot: a trial every {cycle * 1e3:.0f} ms, of which {inside * 1e3:.0f} ms (median) "
          f"in its processes: {(cycle - inside) * 1e3:.0f} ms of placement, streaming and copying")
    print(f"30-second trials one controller keeps busy at this rate: {run.rate * 0.5:.0f} slots; "
          f"at its own CPU limit: {60e3 / per_trial_ms * 0.5:.0f} slots")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ceiling-trials", type=int, default=300)
    parser.add_argument("--ceiling-slots", default="4,8,16", help="comma-separated slot counts")
    parser.add_argument("--recovery-repeats", type=int, default=3)
    parser.add_argument("--sections", default="overhead,ceiling,recovery")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="seel-bench-ray-"))
    try:
        if "overhead" in sections:
            overhead(tmp, args.repeats)
        if "ceiling" in sections:
            for slots in (int(n) for n in args.ceiling_slots.split(",")):
                ceiling(tmp / f"ceiling-{slots}", args.ceiling_trials, slots)
        if "recovery" in sections:
            recovery(tmp, args.recovery_repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
