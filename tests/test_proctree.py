"""Reading /proc: a process's command is whatever bytes it chose, not necessarily UTF-8."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from seel import proctree
from seel.capacity import LoadMeter

# Names itself with the first byte of a two-byte UTF-8 character, as a 15-byte cut can leave it.
ODD_NAME = r"""
open("/proc/self/comm", "wb").write(b"odd-name-\xc3")
print("named", flush=True)
input()
"""


def odd_named() -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", ODD_NAME], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "named\n"
    # what every /proc reader meets
    assert Path(f"/proc/{proc.pid}/comm").read_bytes() == b"odd-name-\xc3\n"
    return proc


async def test_a_process_named_in_bytes_that_are_not_utf8_is_read() -> None:
    meter = LoadMeter(tick_s=10.0)
    proc = odd_named()
    try:
        seen = proctree.stat(proc.pid)
        assert seen is not None and seen.pid == proc.pid
        assert proctree.snapshot()[proc.pid] == seen
        assert proctree.usage_snapshot()[proc.pid].proc == seen
        meter.trial_started("t")
        meter.spawned("t", proc.pid)
        meter.measure("t")  # reads the whole machine's process table
    finally:
        proc.communicate("\n", timeout=30)
        await meter.aclose()
    usage = meter.trial_finished("t")
    assert usage is not None and usage.cpu_s > 0
