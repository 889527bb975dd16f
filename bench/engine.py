"""Benchmarks of the built-in engine: start-up, a whole trial, per-round overhead, memory, accuracy.

    python bench/engine.py [--repeats N]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pexpect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.flkit import agg_doc, free_ports, party_doc, write_yaml

STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z", re.M)


def spawn(module: str, config: Path, cwd: Path) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-m", module, str(config)], cwd=str(cwd),
                          encoding="utf-8", timeout=30, echo=False, dimensions=(50, 1000))
    child.delaybeforesend = None
    return child


def configs(tmp: Path, rounds: int, n: int = 2, engine_defaults: bool = False) -> tuple[Path, list[Path]]:
    ports = free_ports(n + 1)
    doc = agg_doc(ports[0], rounds=rounds, num_parties=n)
    if engine_defaults:
        del doc["hyperparams"]["local"]
    agg = write_yaml(tmp / "agg.yml", doc)
    parties = [write_yaml(tmp / f"p{i}.yml", party_doc(i, n, ports[0], ports[i + 1])) for i in range(n)]
    return agg, parties


def startup(tmp: Path, repeats: int) -> dict[str, float]:
    agg, parties = configs(tmp, 1)
    out = {}
    for module, cfg, marker in (
        ("seel.fl.aggregator", agg, "Aggregator initialization successful"),
        ("seel.fl.party", parties[0], "Party initialization successful"),
    ):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            child = spawn(module, cfg, tmp)
            child.expect_exact(marker)
            times.append(time.perf_counter() - t0)
            child.sendline("STOP")
            child.expect(pexpect.EOF)
            child.close()
        out[module] = statistics.median(times)
    return out


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def trial(tmp: Path, rounds: int, engine_defaults: bool = False) -> dict[str, float]:
    """One trial driven with no waiting between steps; wall time from spawn to all exited."""
    agg_cfg, party_cfgs = configs(tmp, rounds, engine_defaults=engine_defaults)
    t0 = time.perf_counter()
    agg = spawn("seel.fl.aggregator", agg_cfg, tmp)
    parties = [spawn("seel.fl.party", c, tmp) for c in party_cfgs]
    agg.expect_exact("Aggregator initialization successful")
    agg.sendline("START")
    agg.expect_exact("Aggregator start successful")
    for p in parties:
        p.expect_exact("Party initialization successful")
        p.sendline("START")
    for p in parties:
        p.expect_exact("Party start successful")
        p.sendline("REGISTER")
    for p in parties:
        p.expect_exact("Registration Successful")
    agg.sendline("TRAIN")
    agg.expect_exact("Initiating Global Training.")
    start_line = agg.before + agg.after
    agg.expect_exact("Finished Global Training")
    train_log = agg.before + agg.after
    agg.sendline("EVAL")
    for p in parties:
        p.expect_exact("'loss'")
    agg.expect_exact("Finished eval requests")
    rss = [peak_rss_mb(p.pid) for p in parties]
    agg.sendline("STOP")
    local_s = []
    for p in parties:
        p.expect(pexpect.EOF)
        local_s.append([float(s) for s in re.findall(r"epochs, ([\d.]+) s", p.before)])
    agg.expect(pexpect.EOF)
    wall = time.perf_counter() - t0
    for c in (agg, *parties):
        c.close()
    stamps = [time.mktime(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")) + int(s[20:23]) / 1000
              for s in STAMP.findall(start_line + train_log)]
    training_s = stamps[-1] - stamps[0]
    slowest_local = sum(max(r) for r in zip(*local_s, strict=True))
    acc = float(re.findall(r"global_acc=([\d.]+)", train_log)[-1])
    return {"wall_s": wall, "overhead_ms": (training_s - slowest_local) / rounds * 1000,
            "peak_rss_mb": max(rss), "acc": acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up = startup(tmp, args.repeats)
        trials = [trial(tmp, 3) for _ in range(args.repeats)]
        long = [trial(tmp, 20) for _ in range(3)]
        four = trial(tmp, 4, engine_defaults=True)
    med = lambda key, rows: statistics.median(r[key] for r in rows)  # noqa: E731
    print(f"engine: start to 'initialization successful', median of {args.repeats}:")
    for module, seconds in up.items():
        print(f"  {module:<22} {seconds:.3f} s   (target <= 0.300 s)")
    print(f"engine: 2-party 3-round trial, spawn to all exited, median of {args.repeats}: "
          f"{med('wall_s', trials):.3f} s   (target <= 1.0 s)")
    print(f"engine: per-round overhead beyond local training (20-round trials, median of 3): "
          f"{med('overhead_ms', long):.1f} ms   (target <= 20 ms)")
    print(f"engine: peak RSS per party: {max(r['peak_rss_mb'] for r in trials):.1f} MB   (target <= 80 MB)")
    print(f"engine: global accuracy after 4 rounds, engine defaults (1 epoch, batch 32, lr 0.5): {four['acc']:.4f}   (target >= 0.90)")


if __name__ == "__main__":
    main()
