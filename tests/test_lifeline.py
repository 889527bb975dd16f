"""Processes that die with their owner: with SEEL_DIE_WITH_PARENT=1, a SIGKILLed owner leaves no
process, whether spawned on a pty or forked by the fork server (as on a Ray node)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A child that neither reads its terminal nor minds a hang-up: only a signal ends it.
SLEEPER = """
import signal, time
if __name__ == "__main__":  # the fork server imports it first
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    print("sleeper up", flush=True)
    time.sleep(3600)
"""
OWNER = """
import asyncio, json, os, sys
from pathlib import Path
from seel.child import Child
from seel.forkserver import ForkServer

async def main() -> None:
    here = Path.cwd()
    env = {**os.environ, "PYTHONPATH": f"{here}:{sys.argv[1]}", "PYTHONUNBUFFERED": "1"}
    if sys.argv[2] == "1":
        env["SEEL_DIE_WITH_PARENT"] = "1"
    server = ForkServer(sys.executable, ["sleeper"], env, here / "fs.log")
    assert await server.start(), server.broken
    argv = [sys.executable, "-m", "sleeper"]
    forked = await Child.start("forked", argv, cwd=here, env=env, forkserver=server)
    cold = await Child.start("cold", argv, cwd=here, env=env)
    for child in (forked, cold):
        await child.expect("sleeper up", 20)
    print(json.dumps([server.pid, forked.pid, cold.pid]), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _owned(tmp_path: Path, die_with_parent: bool) -> list[int]:
    """Start an owner with a fork server and two children, SIGKILL it; the children's pids."""
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(ROOT), "1" if die_with_parent else "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    with owner.stdout:
        pids: list[int] = json.loads(owner.stdout.readline())
    owner.kill()
    owner.wait()
    return pids


def test_with_the_flag_nothing_outlives_a_sigkilled_owner(tmp_path: Path) -> None:
    pids = _owned(tmp_path, die_with_parent=True)
    deadline = time.monotonic() + 30  # the kernel signals at once; slack for a loaded machine
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)  # not our children: nothing to wait on but /proc
    left = [p for p in pids if _alive(p)]
    for pid in left:
        os.killpg(pid, signal.SIGKILL)
    assert left == []


def test_without_it_a_child_on_its_own_pty_outlives_its_owner(tmp_path: Path) -> None:
    """What the flag is for: the local controller relies on resume to stop such strays."""
    pids = _owned(tmp_path, die_with_parent=False)
    try:
        gone = [p for p in pids[1:] if not _alive(p)]  # (forked, cold)
        assert gone == [], f"of forked {pids[1]} and cold {pids[2]}, gone: {gone}"
    finally:
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


pytestmark = pytest.mark.timeout(60)
