"""What SEEL adds to a real Flower trial: the same deployment driven by a plain script, and by SEEL.

    python bench/flower.py [--repeats N] [--rounds R] [--nodes N] [--reuse-trials T]

Side by side, alternating: (a) a direct driver (subprocess + reader threads, nothing else) starts
a SuperLink and N SuperNodes, waits for their readiness lines, runs `flwr run --stream`, confirms
the run with `flwr list --format json`, and stops every process (the SuperLink's flower-superexec
included); (b) `seel.run.run_sweep` runs one trial of the same deployment (sweeps/flower-app).
Reports medians: the wall time of each, SEEL's overhead as a share of the plain driver's, the
controller's own CPU per trial, and what a deployment costs (its start, its stop). Both with
`reuse: null`: every trial starts its own deployment, as the plain driver does.

Then reuse: the same sweep of T trials that differ only in run_config (`lr`), one at a time, with
the flower engine as shipped (`reuse:`, trials share the first one's deployment) and with
`engine: {extends: flower, reuse: null}`, alternating, `--repeats` times, each a `seel run`: wall
time per trial (the sweep's, start to end, divided by T) and CPU seconds per trial (everything the
sweep used, controller and every descendant, divided by T), medians, and their ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import queue
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seel.events import Event  # noqa: E402
from seel.proctree import descendants  # noqa: E402
from seel.run import RunSettings, run_sweep  # noqa: E402
from tests.flkit import free_ports  # noqa: E402

APP = ROOT / "sweeps" / "flower-app"
BIN = Path(sys.executable).parent
PR_SET_CHILD_SUBREAPER = 36
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


class NullSink:
    """Drops every event."""

    def emit(self, event: Event) -> None:
        pass


class Proc:
    """A process whose output lines are read by a thread (so its pipe never fills)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, text=True, errors="replace",
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(ANSI.sub("", line))
        self.lines.put(None)

    def wait_for(self, marker: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError(f"exited before {marker!r}")
            self.seen.append(line)
            if marker in line:
                return line


def plain_trial(tmp: Path, rounds: int, nodes: int) -> float:
    """The deployment driven directly; returns its wall time, first spawn to all gone."""
    ports = free_ports(1 + nodes)
    home = tmp / "home"
    home.mkdir(parents=True)
    (home / "config.toml").write_text(
        f'[superlink.seel]\naddress = "127.0.0.1:{ports[0]}"\ninsecure = true\n'
    )
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1", "PATH": f"{BIN}:{os.environ['PATH']}",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.monotonic()
    link = Proc([str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port",
                 str(ports[0]), "--disable-runtime-dependency-installation"], env)
    supernodes = [
        Proc([str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{ports[0]}",
              "--port", str(ports[1 + i]), "--node-config",
              f"partition-id={i} num-partitions={nodes}"], env)
        for i in range(nodes)
    ]
    link.wait_for("Uvicorn running on")
    for node in supernodes:
        node.wait_for("SuperNode ID:")
    run = subprocess.run(
        [str(BIN / "flwr"), "run", str(APP), "seel", "--stream", "--run-config",
         f"num-server-rounds={rounds} min-nodes={nodes}"],
        env=env, capture_output=True, text=True, check=True,
    )
    run_id = re.search(r"Successfully started run (\d+)", ANSI.sub("", run.stdout))
    assert run_id is not None and "Strategy execution finished" in ANSI.sub("", run.stdout)
    listed = subprocess.run(
        [str(BIN / "flwr"), "list", "seel", "--run-id", run_id.group(1), "--format", "json"],
        env=env, capture_output=True, text=True, check=True,
    )
    assert json.loads(listed.stdout)["runs"][0]["status"] == "finished:completed"
    procs = [link, *supernodes]
    groups = {p.popen.pid for p in procs}
    for p in procs:
        groups |= {d.pgid for d in descendants(p.popen.pid)}
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        p.popen.wait(timeout=30)
    return time.monotonic() - start


def write_sweep(
    tmp: Path, rounds: int, nodes: int, reuse: bool = False, lrs: tuple[float, ...] = (0.5,)
) -> Path:
    (tmp / "superlink.yml").write_text(
        f"superlink: {{port: 9093}}\napp: {APP}\n"
        f"run_config: {{num-server-rounds: {rounds}, min-nodes: {nodes}, lr: 0.5}}\n"
        "app_config: {}\n"
    )
    for i in range(nodes):
        (tmp / f"supernode{i}.yml").write_text(
            "supernode: {port: 9094, superlink_port: 9093}\n"
            f"node_config: {{partition-id: {i}, num-partitions: {nodes}}}\n"
            "fault: {kill_at_round: 0}\n"
        )
    engine: object = "flower" if reuse else {"extends": "flower", "reuse": None}
    sweep = {"name": "bench-flower", "engine": engine, "parallel": 1,
             "configs": {"aggregator": "superlink.yml",
                         "parties": [f"supernode{i}.yml" for i in range(nodes)]},
             "parameters": {"run_config.num-server-rounds": {"values": [rounds]},
                            "run_config.lr": {"values": list(lrs)}}}
    path = tmp / "sweep.yml"
    path.write_text(json.dumps(sweep))
    return path


def seel_trial(tmp: Path, rounds: int, nodes: int) -> dict[str, float]:
    """One trial through run_sweep: its wall time, the trial's own, the controller's CPU."""
    settings = RunSettings(sweep=write_sweep(tmp, rounds, nodes), out=tmp / "run",
                           ports_dir=tmp / "ports", retries=0)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    asyncio.run(run_sweep(settings, NullSink()))
    wall = time.monotonic() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    [record] = [json.loads(x) for x in (tmp / "run" / "ledger.jsonl").read_text().splitlines()]
    assert record["status"] == "ok", record["reason"]
    durations = record["durations"]
    return {
        "wall": wall,
        "trial": record["elapsed_s"],
        "cpu": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "init": durations["init"],
        "train": durations["train"],
        "confirm": durations["eval"],
        "spawn_and_stop": record["elapsed_s"] - sum(durations.values()),
    }


def reuse_sweep(tmp: Path, rounds: int, nodes: int, trials: int, reuse: bool) -> dict[str, float]:
    """A `seel run` of `trials` trials that differ only in run_config: wall and CPU per trial.

    The CPU is everything the sweep's processes used, the controller and every descendant: this
    process is their subreaper, so what Flower starts in sessions of its own (flower-superexec and
    its ServerApps) comes back here when orphaned, and is reaped here with its times.
    """
    lrs = tuple(round(0.5 - 0.05 * i, 2) for i in range(trials))
    sweep = write_sweep(tmp, rounds, nodes, reuse, lrs)
    env = {**os.environ, "SEEL_PORTS_DIR": str(tmp / "ports")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run([str(BIN / "seel"), "run", str(sweep), "-o", str(tmp / "run")], env=env,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    wall = time.monotonic() - start
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # orphans SEEL stopped: reap them, so their times count
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.1)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    records = [json.loads(x) for x in (tmp / "run" / "ledger.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok"] * trials, [r["reason"] for r in records]
    reused = sum(r["deployment"] not in (None, r["trial_id"]) for r in records)
    assert reused == (trials - 1 if reuse else 0), [r["deployment"] for r in records]
    return {
        "wall_per_trial": wall / trials,
        "cpu_per_trial": cpu / trials,
        "recorded_cpu_per_trial": sum(r["cpu_s"] for r in records) / trials,
        "later_trial": statistics.median(r["elapsed_s"] for r in records[1:]),
        "later_cpu": statistics.median(r["cpu_s"] for r in records[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--reuse-trials", type=int, default=4, help="0: skip the reuse section")
    parser.add_argument("--skip-overhead", action="store_true", help="only the reuse section")
    args = parser.parse_args()
    if not args.skip_overhead:
        overhead(args)
    if args.reuse_trials > 1:
        reuse(args)


def reuse(args: argparse.Namespace) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for i in range(args.repeats):
        for shared in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                runs[shared].append(
                    reuse_sweep(Path(tmp), args.rounds, args.nodes, args.reuse_trials, shared)
                )
            print(f"repeat {i}: reuse={shared} {runs[shared][-1]}", flush=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    fresh, kept = med[False], med[True]
    print(f"Reuse: {args.reuse_trials} trials differing only in run_config.lr, one at a time, "
          f"{args.nodes} SuperNodes, {args.rounds} rounds, medians of {args.repeats}:")
    print("                                 reuse: null     reuse (shipped)   ratio")
    for key, label in (("wall_per_trial", "wall time per trial (sweep / T)"),
                       ("cpu_per_trial", "CPU-s per trial (sweep / T)"),
                       ("recorded_cpu_per_trial", "cpu_s per trial (SEEL's, sum / T)"),
                       ("later_trial", "trial 2..T: elapsed_s"),
                       ("later_cpu", "trial 2..T: cpu_s (SEEL's)")):
        print(f"  {label:<31} {fresh[key]:9.2f}      {kept[key]:9.2f}        "
              f"{kept[key] / fresh[key]:5.2f}")


def overhead(args: argparse.Namespace) -> None:
    plain: list[float] = []
    seel: list[dict[str, float]] = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            plain.append(plain_trial(Path(tmp), args.rounds, args.nodes))
        with tempfile.TemporaryDirectory() as tmp:
            seel.append(seel_trial(Path(tmp), args.rounds, args.nodes))
        print(f"repeat {i}: plain {plain[-1]:.2f} s, seel {seel[-1]}", flush=True)
    med = {k: statistics.median(s[k] for s in seel) for k in seel[0]}
    base = statistics.median(plain)
    print(f"Flower trial, {args.nodes} SuperNodes, {args.rounds} rounds, medians of {args.repeats}:")
    print(f"  plain driver, spawn to all gone        {base:8.2f} s")
    print(f"  SEEL trial (elapsed_s)                 {med['trial']:8.2f} s  "
          f"{100 * (med['trial'] - base) / base:+.1f} %   (target < +5 %)")
    paired = statistics.median(s["trial"] / p for s, p in zip(seel, plain, strict=True))
    print(f"  SEEL trial / plain, paired repeats     {100 * (paired - 1):+8.1f} %   (median ratio)")
    print(f"  SEEL run_sweep, 1-trial sweep          {med['wall']:8.2f} s  "
          f"{100 * (med['wall'] - base) / base:+.1f} %")
    print(f"  controller CPU per trial               {med['cpu']:8.3f} s")
    print(f"  deployment start (init phase)          {med['init']:8.2f} s")
    print(f"  run (train phase)                      {med['train']:8.2f} s")
    print(f"  confirmation (flwr list)               {med['confirm']:8.2f} s")
    print(f"  spawn + stop ladder                    {med['spawn_and_stop']:8.2f} s")
    print(f"  reuse would save per trial (start+stop) {med['init'] + med['spawn_and_stop']:7.2f} s "
          f"({100 * (med['init'] + med['spawn_and_stop']) / med['trial']:.0f} % of a trial)")


if __name__ == "__main__":
    main()
