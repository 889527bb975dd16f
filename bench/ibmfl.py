"""Table I on the real IBM FL: cold versus warm (fork server), SEEL's chosen parallelism versus one
trial at a time, and the built-in engine's `auto` versus fixed `--parallel`.

    python bench/ibmfl.py --python /path/to/ibmfl-venv/bin/python [--quick]

IBM FL is not part of SEEL: without `--python` (or SEEL_IBMFL_PYTHON) pointing at an environment
that imports it, this prints why and exits 0. Every run is a real `seel run` (`--plain`), one
after the other on the same machine; figures are medians over the trials of a run, and ratios of
runs made side by side here. The machine's load average is printed with each run, since others
may be using it.

Measured per run: trials/min (trials over the `seel run` wall time, fork server start included),
CPU-s per trial (median of the `cpu_s` column: the trial's own processes; and the whole command's
CPU, controller and fork server included, over the trial count), the machine's mean load while
trials ran (`machine_load`), and the median duration of each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "sweeps" / "ibmfl-iter-avg.yml"
PAPER_TRIALS_PER_MIN = 2.87  # the paper's bash driver on Table I
PHASES = ["init", "start", "register", "train", "eval", "stop"]
# The trials run one at a time for the phase comparison (a subset of Table I, every rounds value)
SOLO = ["hyperparams.global.max_timeout=0", "hyperparams.global.termination_accuracy=0.95,0.96,0.97"]


def seel(*args: str) -> list[str]:
    return [sys.executable, "-m", "seel.cli", *args]


def cold_sweep(folder: Path) -> Path:
    """Table I with the fork server off (every process imports IBM FL itself)."""
    text = SWEEP.read_text().replace("engine: ibmfl", "engine: {extends: ibmfl, preload: []}")
    text = text.replace("configs/ibmfl/", str(SWEEP.parent / "configs" / "ibmfl") + "/")
    path = folder / "ibmfl-iter-avg-cold.yml"
    path.write_text(text)
    return path


def run(label: str, sweep: Path, out: Path, *extra: str) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    done = subprocess.run(
        seel("run", str(sweep), "--plain", "--out", str(out), *extra),
        capture_output=True, text=True, check=False,
    )
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{label}: seel run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    records = [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    phases = {p: statistics.median(r["durations"][p] for r in records if p in r["durations"]) for p in PHASES}
    loads = [r["machine_load"] for r in records if r.get("machine_load") is not None]
    pressures = [r["cpu_pressure"] for r in records if r.get("cpu_pressure") is not None]
    spans = [(r["started_at"], r["started_at"] + r["elapsed_s"]) for r in records]
    result = {
        "label": label,
        "most_at_once": max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans),
        "trials": len(records),
        "ok": sum(r["status"] == "ok" for r in records),
        "wall_s": wall,
        "trials_per_min": len(records) / wall * 60,
        "trial_cpu_s": statistics.median(r["cpu_s"] for r in records if r.get("cpu_s") is not None),
        "command_cpu_s_per_trial": cpu / len(records),
        "machine_load": statistics.mean(loads) if loads else None,
        "cpu_pressure": statistics.mean(pressures) if pressures else None,
        "loadavg_before": load,
        "loadavg_after": os.getloadavg()[0],
        "phases": phases,
        "records": records,
        "first_line": done.stdout.splitlines()[0] if done.stdout else "",
    }
    print(
        f"{label:<34} {result['trials']:>3} trials ({result['ok']} ok) in {wall:6.1f} s: "
        f"{result['trials_per_min']:6.1f} trials/min (up to {result['most_at_once']} at once), CPU-s/trial {result['trial_cpu_s']:.2f} "
        f"(whole command {result['command_cpu_s_per_trial']:.2f}), machine load "
        f"{(result['machine_load'] or 0):.0%}, CPU pressure {(result['cpu_pressure'] or 0):.0%}, "
        f"load average {load:.1f} -> {result['loadavg_after']:.1f}",
        flush=True,
    )
    return result


def _fixed() -> dict[str, Any]:
    """The subset's single-value overrides (they are not in its trials' params)."""
    fixed = {}
    for text in SOLO:
        key, _, value = text.partition("=")
        if "," not in value:
            fixed[key] = float(value) if "." in value else int(value)
    return fixed


def _key(record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted({**record["params"]}.items()))


def phase_medians(records: list[dict[str, Any]], keys: set[tuple[Any, ...]]) -> dict[str, float]:
    fixed = _fixed()
    chosen = [
        r for r in records
        if all(r["params"].get(k, v) == v for k, v in fixed.items())
        and tuple(sorted((k, v) for k, v in r["params"].items() if k not in fixed)) in keys
    ]
    return {p: statistics.median(r["durations"][p] for r in chosen if p in r["durations"]) for p in PHASES}


def compare_phases(solo: dict[str, Any], many: dict[str, Any], what: str = "") -> None:
    keys = {_key(r) for r in solo["records"]}
    alone = phase_medians(solo["records"], keys)
    together = phase_medians(many["records"], keys)
    print(f"\n{what}phase medians over the same {len(keys)} trials, {many['label']} vs {solo['label']}:")
    print(f"  {'phase':<9} {'solo s':>8} {'chosen s':>9} {'ratio':>6}")
    for phase in PHASES:
        ratio = together[phase] / alone[phase] if alone[phase] else float("nan")
        print(f"  {phase:<9} {alone[phase]:8.3f} {together[phase]:9.3f} {ratio:6.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=os.environ.get("SEEL_IBMFL_PYTHON"))
    parser.add_argument("--quick", action="store_true", help="Table I only warm, no cold runs")
    parser.add_argument("--builtin", action="store_true", help="also the built-in engine's auto vs fixed")
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("--only-builtin", action="store_true", help="just the built-in comparison")
    args = parser.parse_args()
    if not args.python or (shutil.which(args.python) is None and not Path(args.python).exists()):
        print("IBM FL's Python not given (--python or SEEL_IBMFL_PYTHON): skipped")
        return 0
    check = subprocess.run([args.python, "-c", "import ibmfl"], capture_output=True, check=False)
    if check.returncode != 0:
        print(f"{args.python} cannot import ibmfl: skipped")
        return 0
    subprocess.run(seel("ibmfl", "data", str(SWEEP.parent / "configs" / "ibmfl"), "--python", args.python),
                   check=True, capture_output=True)
    os.environ["SEEL_IBMFL_PYTHON"] = args.python
    print(f"{os.cpu_count()} cores; IBM FL at {args.python}; paper: {PAPER_TRIALS_PER_MIN} trials/min\n")
    with tempfile.TemporaryDirectory(prefix="seel-bench-ibmfl-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if args.only_builtin:
            builtin(folder)
            return 0
        cold = cold_sweep(folder)
        warm_auto = run("Table I, warm, --parallel auto", SWEEP, folder / "warm-auto")
        # The subset alone twice: how far two solo runs differ is the comparison's noise floor
        # (phases of 5-30 ms, medians of 9), and auto is compared with both runs' trials.
        solo_a = run("subset, warm, --parallel 1", SWEEP, folder / "warm-solo", *SOLO, "--parallel", "1")
        solo_b = run("subset again, warm, --parallel 1", SWEEP, folder / "warm-solo-2", *SOLO, "--parallel", "1")
        compare_phases(solo_a, solo_b, "the noise floor: ")
        warm_solo = {**solo_a, "label": "both solo runs", "records": solo_a["records"] + solo_b["records"]}
        if not args.quick:
            cold_auto = run("Table I, cold, --parallel auto", cold, folder / "cold-auto")
            cold_solo = run("subset, cold, --parallel 1", cold, folder / "cold-solo", *SOLO, "--parallel", "1")
            print(
                f"\nwarm vs cold, auto: {warm_auto['trials_per_min'] / cold_auto['trials_per_min']:.1f}x "
                f"trials/min, CPU-s per trial {cold_auto['trial_cpu_s']:.2f} -> {warm_auto['trial_cpu_s']:.2f}"
                f"; solo CPU-s per trial {cold_solo['trial_cpu_s']:.2f} -> {warm_solo['trial_cpu_s']:.2f}"
            )
        print(
            f"warm auto vs the paper: {warm_auto['trials_per_min'] / PAPER_TRIALS_PER_MIN:.1f}x "
            f"({warm_auto['trials_per_min']:.1f} vs {PAPER_TRIALS_PER_MIN} trials/min)"
        )
        compare_phases(warm_solo, warm_auto)
        if args.builtin:
            builtin(folder)
    return 0


def builtin(folder: Path, repeat: int = 3) -> None:
    """The built-in engine's Table I: auto against fixed parallelism, interleaved `repeat` times
    (others' load on a shared machine changes from one run to the next); medians."""
    print()
    table = ROOT / "sweeps" / "paper-table1.yml"
    modes: dict[str, list[str]] = {"auto": [], **{f"--parallel {n}": ["--parallel", str(n)] for n in (1, 2, 4)}}
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    for i in range(repeat):
        for mode, extra in modes.items():
            out = folder / f"builtin-{mode.replace('--parallel ', 'p')}-{i}"
            rates[mode].append(run(f"built-in Table I, {mode}", table, out, *extra)["trials_per_min"])
    medians = {mode: statistics.median(r) for mode, r in rates.items()}
    best = max((m for m in medians if m != "auto"), key=lambda m: medians[m])
    print(
        f"built-in, medians of {repeat}: " + ", ".join(f"{m} {v:.1f}" for m, v in medians.items())
        + f" trials/min; auto vs the best fixed ({best}): {medians['auto'] / medians[best]:.2f}x"
    )

if __name__ == "__main__":
    sys.exit(main())
