"""Tests for seel.child: one fake FL process on a pty, driven through the Child adapter."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from seel.child import Child, ChildExited, FailureSeen, MarkerTimeout

FAKE = Path(__file__).parent / "children" / "fakefl.py"
READY = "Aggregator initialization successful"
STARTED = "Aggregator start successful"
TRACEBACK = "Traceback (most recent call last)"

Spawn = Callable[..., Child]


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    """Spawns fake children; kills and closes every one of them after the test."""
    children: list[Child] = []

    def make(*args: str, **kwargs: Any) -> Child:
        kwargs.setdefault("transcript", tmp_path / f"child{len(children)}.log")
        argv = [sys.executable, str(FAKE), "--mailbox", str(tmp_path), *args]
        child = Child(f"child{len(children)}", argv, cwd=tmp_path, **kwargs)
        children.append(child)
        return child

    yield make
    for child in children:
        with contextlib.suppress(Exception):
            await child.stop(None, 0.0, 2.0)
        child.close()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- waiting on markers -------------------------------------------------------------------------


async def test_expect_returns_the_line_with_the_marker(spawn: Spawn) -> None:
    child = spawn()
    line = await child.expect(READY, 10)
    assert READY in line.text
    assert " | INFO | " in line.text
    assert line.seq >= 1


async def test_expect_since_ignores_earlier_lines(spawn: Spawn) -> None:
    child = spawn()
    await child.expect(READY, 10)
    child.send_line("START")
    first = await child.expect(STARTED, 5)
    # The same marker again, from the next line on: the old line does not count.
    after = first.seq + 1
    with pytest.raises(MarkerTimeout):
        await child.expect(STARTED, 0.1, since=after)
    # An earlier `since` still finds the old line at once.
    assert (await child.expect(STARTED, 0.1, since=1)).seq == first.seq
    mark = child.mark()
    assert mark > first.seq
    child.send_line("START")
    second = await child.expect(STARTED, 5, since=mark)
    assert second.seq > first.seq


async def test_expect_regex_marker(spawn: Spawn) -> None:
    child = spawn()
    line = await child.expect(re.compile(r"(Aggregator|Party) initialization \w+"), 10)
    assert READY in line.text


async def test_marker_timeout_carries_the_tail(spawn: Spawn) -> None:
    child = spawn()
    await child.expect(READY, 10)
    started = time.monotonic()
    with pytest.raises(MarkerTimeout) as info:
        await child.expect("never printed", 0.15)
    waited = time.monotonic() - started
    assert 0.15 <= waited < 2.0
    error = info.value
    assert error.marker == "never printed"
    assert error.waited_s == pytest.approx(0.15)
    assert error.child == child.name
    assert any(READY in text for text in error.tail)
    assert "'never printed' not seen within 0.15 s" in str(error)
    assert not child.exited.done()  # a timeout does not touch the child


async def test_failure_marker_fails_a_waiter_at_once(spawn: Spawn) -> None:
    # IBM FL with a config section missing prints this and stays at its prompt.
    child = spawn("--style", "ibmfl", "--missing-section", "--ready-after", "0.1",
                  failure_markers=["Error occurred while loading"])
    async with asyncio.timeout(10):  # the waiter's own 60 s must not be what ends it
        with pytest.raises(FailureSeen) as info:
            await child.expect(READY, 60)
    assert info.value.marker == "Error occurred while loading"
    assert "Error occurred while loading aggregator configuration" in info.value.line
    assert child.failure is info.value
    assert not child.exited.done()
    # Every later wait fails the same way, without waiting.
    async with asyncio.timeout(1):
        with pytest.raises(FailureSeen):
            await child.expect("anything", 60)


async def test_failure_marker_in_a_crash_traceback(spawn: Spawn) -> None:
    child = spawn("--crash-on", "BOOM", failure_markers=[TRACEBACK])
    await child.expect(READY, 10)
    waiting = asyncio.ensure_future(child.expect("never printed", 60))
    child.send_line("BOOM")
    async with asyncio.timeout(10):
        with pytest.raises(FailureSeen) as info:
            await waiting
    assert info.value.marker == TRACEBACK
    assert await child.wait_exit(10)
    assert child.exit_code == 1
    assert any("RuntimeError: aggregator crashed on BOOM" in text for text in child.tail())


async def test_child_exited_before_the_marker(spawn: Spawn) -> None:
    child = spawn("--exit", "3")
    async with asyncio.timeout(10):
        with pytest.raises(ChildExited) as info:
            await child.expect(STARTED, 60)
    assert info.value.exit_code == 3
    assert any(READY in text for text in info.value.tail)
    assert child.exit_code == 3
    # After the exit, waiting and sending fail at once.
    with pytest.raises(ChildExited):
        await child.expect(STARTED, 60)
    with pytest.raises(ChildExited):
        child.send_line("START")
    # A marker printed before the exit is still found.
    assert READY in (await child.expect(READY, 0.1)).text


async def test_watched_marker_seen_before_the_wait_is_not_lost(spawn: Spawn) -> None:
    child = spawn("--chatter", "300", watch=[READY])
    await child.expect("chatter 300 of 300", 10)
    line = await child.expect(READY, 0.2, since=1)
    assert READY in line.text
    assert len(child.tail(10**6)) <= 200  # the tail stayed bounded all the same


async def test_exit_code_of_a_command(spawn: Spawn) -> None:
    child = spawn("--exit-on", "QUIT", "7")
    await child.expect(READY, 10)
    child.send_line("QUIT")
    assert await child.wait_exit(10)
    assert child.exit_code == 7
    assert gone(child.pid)


# -- stopping -----------------------------------------------------------------------------------


async def test_stop_line_is_enough_for_a_well_behaved_child(spawn: Spawn, tmp_path: Path) -> None:
    child = spawn()
    await child.expect(READY, 10)
    assert await child.stop("STOP", 5.0, 5.0) == 0
    assert gone(child.pid)
    transcript = (tmp_path / "child0.log").read_text()
    assert "# seel: sent 'STOP'" in transcript
    assert "SIGTERM" not in transcript


async def test_stop_ladder_reaches_sigkill(spawn: Spawn, tmp_path: Path) -> None:
    child = spawn("--ignore-term", "--hang-on", "STOP")
    await child.expect(READY, 10)  # printed after SIGTERM is ignored
    async with asyncio.timeout(10):
        code = await child.stop("STOP", 0.1, 0.1)
    assert code == -9
    assert gone(child.pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(child.pgid, 0)
    transcript = (tmp_path / "child0.log").read_text()
    rungs = [
        "# seel: sent 'STOP'",
        "# seel: waiting 0.1 s for exit after 'STOP'",
        f"# seel: sending SIGTERM to group {child.pgid}",
        f"# seel: sending SIGKILL to group {child.pgid}",
        "# seel: exited with code -9",
    ]
    positions = [transcript.find(rung) for rung in rungs]
    assert all(p >= 0 for p in positions), transcript
    assert positions == sorted(positions)


async def test_sigterm_ends_a_hung_child(spawn: Spawn, tmp_path: Path) -> None:
    child = spawn("--hang-on", "STOP")
    await child.expect(READY, 10)
    async with asyncio.timeout(10):
        code = await child.stop("STOP", 0.1, 5.0)
    assert code == -15
    assert gone(child.pid)
    assert "SIGKILL" not in (tmp_path / "child0.log").read_text()


# -- output that could hurt the controller ------------------------------------------------------


async def test_flood_keeps_memory_bounded_and_the_marker_is_seen(spawn: Spawn, tmp_path: Path) -> None:
    # The controller's memory must not follow the flood: its peak (about 0.2 MB) is bounded at a
    # quarter of the flood, far above what it is and far below what keeping the flood would take.
    flood = 8 << 20
    limit = 1 << 20
    tracemalloc.start()
    try:
        child = spawn("--flood", str(flood), transcript_limit_bytes=limit)
        line = await child.expect(READY, 60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert line.seq > flood // 100  # every flood line went through the reader
    assert len(child.tail(10**6)) <= 200
    assert peak < flood // 4, f"peak traced memory {peak} bytes for a {flood} byte flood"
    # The limit is on the child's output; SEEL's own notes (the spawn line names the interpreter
    # and the checkout's path, so its length depends on where the tests run) always get through.
    lines = (tmp_path / "child0.log").read_bytes().splitlines(keepends=True)
    output = sum(len(line) for line in lines if b" # seel: " not in line)
    assert limit // 2 < output <= limit
    assert lines[-1].rstrip().endswith(b"# seel: transcript limit reached")
    # The child is still usable after the flood.
    child.send_line("START")
    await child.expect(STARTED, 10)


async def test_long_line_is_cut(spawn: Spawn) -> None:
    child = spawn("--flood", "300000", max_line_chars=1000)
    line = await child.expect(READY, 30)
    assert all(len(text) <= 1000 for text in child.tail(200))
    assert READY in line.text


async def test_invalid_utf8_and_escapes_do_not_break_matching(spawn: Spawn) -> None:
    child = spawn("--binary")
    line = await child.expect(READY, 10)
    assert "\ufffd" in line.text  # the invalid bytes around the marker were replaced
    assert "\x1b[32m" in line.text
    tail = child.tail()
    assert any("invalid utf-8" in text and "\ufffd" in text for text in tail)
    assert any("window title" in text for text in tail)
    # Later lines still match normally.
    child.send_line("START")
    started = await child.expect(STARTED, 5, since=line.seq + 1)
    assert started.seq > line.seq


async def test_transcript_has_timestamps_and_notes(spawn: Spawn, tmp_path: Path) -> None:
    child = spawn()
    await child.expect(READY, 10)
    child.send_line("START")
    await child.expect(STARTED, 5)
    await child.stop("STOP", 5.0, 5.0)
    child.close()
    lines = (tmp_path / "child0.log").read_text().splitlines()
    stamp = re.compile(r"^ *\d+\.\d{3} ")
    assert lines and all(stamp.match(text) for text in lines), lines
    text = "\n".join(lines)
    assert re.search(rf"^ *\d+\.\d{{3}} # seel: spawned pid {child.pid} \(group {child.pgid}\): ", text, re.M)
    assert re.search(r"^ *\d+\.\d{3} # seel: sent 'START'$", text, re.M)
    assert re.search(rf"^ *\d+\.\d{{3}} .*{READY}$", text, re.M)
    assert text.index("# seel: sent 'START'") < text.index(STARTED)
    assert re.search(r"# seel: exited with code 0$", text, re.M)
    times = [float(t.split()[0]) for t in lines]
    assert times == sorted(times)
