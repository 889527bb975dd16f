"""Adaptive search against the grid it replaces, on the built-in engine.

    python bench/search.py [--seeds 5] [--share 0.1] [--parallel 2] [--fresh]

The space is bench/search.yml: 432 configurations (learning rate, epochs, batch size, rounds,
MLP size and Dirichlet label skew). The objective is the parties' mean test accuracy (`acc`).

1. Ground truth: the full grid, run once with `seel run` into runs/bench-search/grid (git-ignored)
   and reused by later runs (`--fresh` runs it again); its CPU-seconds are kept beside it.
2. Four methods at a budget of `share` of the grid's trials (43 of 432), each with `--seeds` seeds:
   a grid subset (Optuna's GridSampler: a random subset of the grid's configurations), random
   search, TPE (constant liar), and TPE with the Hyperband pruner on the per-round global accuracy.
3. Per run: regret = the grid's best minus the best found by the run's ok trials, in accuracy
   points, and the CPU-seconds of `seel run` with every process it started (user + sys of the
   reaped children). Medians over seeds; CPU as a share of the full grid's.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from seel.jsonio import number
from seel.store import read_ledger

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "bench" / "search.yml"
OUT = ROOT / "runs" / "bench-search"
SEEL = Path(sys.executable).parent / "seel"
METRIC = "acc"
METHODS: dict[str, dict[str, Any]] = {
    "grid subset": {"sampler": "grid"},
    "random": {"sampler": "random"},
    "tpe": {"sampler": "tpe"},
    "tpe + hyperband": {
        "sampler": "tpe",
        "pruner": {"name": "hyperband", "min_rounds": 1, "max_rounds": 6},
    },
    "tpe + hyperband, from round 2": {
        "sampler": "tpe",
        "pruner": {"name": "hyperband", "min_rounds": 2, "max_rounds": 6},
    },
}
# The cheapest configuration: `seel run` of it alone is the fixed cost of a run (the controller's
# start-up, the fork server's preload) plus one short trial.
ONE_TRIAL = [
    "hyperparams.local.optimizer.lr=0.01",
    "hyperparams.local.training.epochs=1",
    "hyperparams.local.training.batch_size=256",
    "hyperparams.global.rounds=3",
    "model.spec.hidden=16",
    "party.data.info.alpha=0.5",
]


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_seel(sweep: Path, out: Path, parallel: int, overrides: list[str] | None = None) -> float:
    """Run a sweep to its end; the CPU-seconds it and its processes spent."""
    before = children_cpu_s()
    done = subprocess.run(
        [
            *(str(SEEL), "run", str(sweep), *(overrides or [])),
            *("--out", str(out), "--plain", "--parallel", str(parallel)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"seel run {sweep} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return children_cpu_s() - before


def ledger(run_dir: Path) -> list[dict[str, Any]]:
    """The run's records, read as SEEL reads them (a torn last line skipped)."""
    return list(read_ledger(run_dir / "ledger.jsonl"))


def trial_values(run_dir: Path) -> dict[str, float]:
    """Each ok trial's objective: the mean of METRIC over its parties (from the ledger); a trial
    with a value that is not finite has none."""
    values: dict[str, float] = {}
    for doc in ledger(run_dir):
        found = [number(p["metrics"].get(METRIC)) for p in doc["parties"]]
        if doc["status"] == "ok" and found and all(v is not None and math.isfinite(v) for v in found):
            values[doc["trial_id"]] = sum(found) / len(found)  # type: ignore[arg-type]
    return values


def near_best(best: float, within: float) -> int:
    return sum(v >= best - within for v in trial_values(OUT / "grid").values())


def train_share() -> str:
    """A grid trial's mean wall time and the part of it spent in its rounds (the train phase)."""
    docs = ledger(OUT / "grid")
    total = statistics.mean(d["elapsed_s"] for d in docs)
    train = statistics.mean(d["durations"].get("train", 0.0) for d in docs)
    return f"{total:.3f} s on average, {train:.3f} s ({train / total:.0%}) of it in its rounds"


def sweep_file(search: dict[str, Any] | None, name: str) -> Path:
    """bench/search.yml with absolute config paths and a `search:` section, under OUT."""
    yaml = YAML()
    doc = yaml.load(SPACE.read_text())
    configs = doc["configs"]
    configs["aggregator"] = str((SPACE.parent / configs["aggregator"]).resolve())
    configs["parties"] = [str((SPACE.parent / p).resolve()) for p in configs["parties"]]
    if search is not None:
        doc["search"] = search
    path = OUT / "sweeps" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        yaml.dump(doc, handle)
    return path


def ground_truth(parallel: int, fresh: bool) -> tuple[float, float, int]:
    """The grid's best value, its CPU-seconds and its size (run once, then read back)."""
    grid_dir, cpu_file = OUT / "grid", OUT / "grid-cpu.json"
    if fresh:
        shutil.rmtree(grid_dir, ignore_errors=True)
        cpu_file.unlink(missing_ok=True)
    if not cpu_file.exists():
        shutil.rmtree(grid_dir, ignore_errors=True)
        print("running the full grid once (the ground truth)...", file=sys.stderr, flush=True)
        started = time.monotonic()
        cpu = run_seel(sweep_file(None, "grid"), grid_dir, parallel)
        cpu_file.write_text(json.dumps({"cpu_s": cpu, "wall_s": time.monotonic() - started}))
    values = trial_values(grid_dir)
    size = len(ledger(grid_dir))
    return max(values.values()), float(json.loads(cpu_file.read_text())["cpu_s"]), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="run the ground-truth grid again")
    args = parser.parse_args()

    best, grid_cpu, size = ground_truth(args.parallel, args.fresh)
    budget = max(1, round(size * args.share))
    one_dir = OUT / "one-trial"
    shutil.rmtree(one_dir, ignore_errors=True)
    one_cpu = run_seel(sweep_file(None, "one-trial"), one_dir, 1, ONE_TRIAL)
    print(f"grid: {size} trials, best {METRIC} {best:.4f}, {grid_cpu:.1f} CPU-s")
    print(
        f"{near_best(best, 0.005)} of its configurations within 0.5 points of the best; a trial "
        f"lasts {train_share()} (where pruning can save)"
    )
    print(
        f"seel run of the cheapest configuration alone: {one_cpu:.2f} CPU-s (fixed cost of a run)"
    )
    print(
        f"budget: {budget} trials ({args.share:.0%}), {args.seeds} seeds, {args.parallel} at a time"
    )
    rows = []
    for method, search in METHODS.items():
        regrets, cpus, pruned = [], [], []
        for seed in range(args.seeds):
            name = f"{method.replace(' ', '').replace('+', '-')}-s{seed}"
            run_dir = OUT / name
            shutil.rmtree(run_dir, ignore_errors=True)
            sweep = sweep_file(
                {
                    **search,
                    "trials": budget,
                    "seed": seed,
                    "objective": {"metric": METRIC, "parties": "mean", "direction": "maximize"},
                },
                name,
            )
            cpus.append(run_seel(sweep, run_dir, args.parallel))
            found = trial_values(run_dir)
            regrets.append(100 * (best - max(found.values(), default=0.0)))
            records = ledger(run_dir)
            assert len(records) == budget, f"{name}: {len(records)} trials, budget {budget}"
            pruned.append(sum(doc["status"] == "pruned" for doc in records))
            print(
                f"  {name}: regret {regrets[-1]:.2f} points, {cpus[-1]:.1f} CPU-s, "
                f"{pruned[-1]} pruned",
                file=sys.stderr,
                flush=True,
            )
        rows.append((method, regrets, cpus, pruned))

    print()
    print(
        f"| method ({budget} trials, {args.seeds} seeds) | median regret (acc points) | "
        "regret range | median CPU-s | CPU share of grid | median pruned |"
    )
    print("|---|---|---|---|---|---|")
    print(f"| full grid ({size} trials) | 0 | - | {grid_cpu:.1f} | 100% | - |")
    for method, regrets, cpus, pruned in rows:
        cpu = statistics.median(cpus)
        print(
            f"| {method} | {statistics.median(regrets):.2f} | {min(regrets):.2f}-{max(regrets):.2f} "
            f"| {cpu:.1f} | {cpu / grid_cpu:.1%} | {statistics.median(pruned):g} |"
        )


if __name__ == "__main__":
    main()
