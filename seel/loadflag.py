"""Whether a run's timeouts track how loaded the machine was: a finding SEEL may have made itself.

A trial that times out because its processes were starved of CPU says nothing about its
parameters. Each trial records the machine's mean busy fraction while it ran (`machine_load`)
and the mean CPU pressure (`cpu_pressure`, the share of time some process waited for a core);
when the trials that timed out ran under markedly more of either than the others, `seel report`
says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MIN_TRIALS = 3  # timeouts, and other trials, needed before anything is said
MIN_GAP = 0.15  # mean load of the timeouts minus that of the others
MIN_R = 0.3  # point-biserial correlation of timing out with load


def timeouts_track_load(
    statuses: Sequence[str], loads: Sequence[float | None], what: str = "machine load"
) -> str | None:
    """A one-line warning if timeouts went with a busier machine, else None. `loads` are
    fractions (0-1) of the measure `what` names: the busy fraction, or the CPU pressure."""
    pairs = [(s, float(x)) for s, x in zip(statuses, loads, strict=True) if x is not None]
    pairs = [(s, x) for s, x in pairs if math.isfinite(x) and s not in ("interrupted", "pruned")]
    timed_out = [x for s, x in pairs if s == "timeout"]
    others = [x for s, x in pairs if s != "timeout"]
    if len(timed_out) < MIN_TRIALS or len(others) < MIN_TRIALS:
        return None
    mean_t, mean_o = sum(timed_out) / len(timed_out), sum(others) / len(others)
    everything = [x for _, x in pairs]
    mean = sum(everything) / len(everything)
    sd = math.sqrt(sum((x - mean) ** 2 for x in everything) / len(everything))
    if sd == 0:
        return None
    share = len(timed_out) / len(everything)
    r = (mean_t - mean_o) / sd * math.sqrt(share * (1 - share))
    if mean_t - mean_o < MIN_GAP or r < MIN_R:
        return None
    return (
        f"timeouts track {what}: the {len(timed_out)} timeouts ran at {mean_t:.0%} {what}, "
        f"the other {len(others)} trials at {mean_o:.0%} (r = {r:.2f}); some may "
        "be the load's doing, not the parameters': re-run them with a lower --parallel"
    )
