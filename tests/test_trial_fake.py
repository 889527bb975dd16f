"""Whole sweeps through seel.run with fake FL processes (tests/children/fakefl.py).

Each test writes a sweep whose engine extends a shipped one (builtin or ibmfl) and only swaps the
commands for the fake, so the shipped lifecycles, failure markers and metrics patterns are what
is tested. The fake's fault knobs come from each config's `fake.args`, so one sweep can hold a
failing trial and a good one.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from seel.events import Event, PhaseReached, RoundFinished, TrialFinished, TrialStarted
from seel.run import RunResult, RunSettings, run_sweep

FAKE = Path(__file__).parent / "children" / "fakefl.py"
PHASES = ["init", "start", "register", "train", "eval", "stop"]
# init also covers three interpreters starting up, on a machine that may be busy
FAST = {"init": 5, "start": 1, "register": 1, "train": 1, "eval": 1, "stop": 1}
# For a trial that must end ok and waits for no timeout: bounds only a stalled test would meet.
ROOMY = dict.fromkeys(PHASES, 60.0)


@dataclass
class ListSink:
    """Collects every event."""

    events: list[Event] = field(default_factory=list)

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def fake_engine(style: str) -> dict[str, Any]:
    """An engine that extends the shipped `style` engine and runs the fake instead."""

    def command(role: str) -> list[str]:
        return ["{python}", str(FAKE), "--role", role, "--style", style, "{config}"]

    return {
        "extends": style,
        "name": f"fake-{style}",
        "python": sys.executable,
        "check": ["{python}", "-c", "pass"],
        "aggregator": {"command": command("aggregator"), "port_keys": ["connection.info.port"],
                       "stop_line": "STOP"},
        "party": {"command": command("party"), "port_keys": ["connection.info.port"],
                  "aggregator_port_keys": ["aggregator.port"],
                  # ibmfl parties leave only after a line; builtin ones leave by themselves
                  "stop_line": "STOP" if style == "ibmfl" else None},
        "validate": None,
        "stop": {"grace_s": 0.5, "term_grace_s": 0.5},
    }


def write_sweep(
    tmp_path: Path,
    style: str,
    *,
    agg_args: str = "",
    party_args: tuple[str, ...] = ("", ""),
    parameters: dict[str, Any] | None = None,
    timeouts: dict[str, float] | None = None,
) -> Path:
    """Configs plus a sweep file in tmp_path (JSON is YAML)."""
    agg = {"connection": {"info": {"ip": "127.0.0.1", "port": 5000}}, "fake": {"args": agg_args}}
    (tmp_path / "config_agg.yml").write_text(json.dumps(agg, indent=2))
    party_files = []
    for i, args in enumerate(party_args):
        doc = {
            "aggregator": {"ip": "127.0.0.1", "port": 5000},
            "connection": {"info": {"ip": "127.0.0.1", "port": 8085 + i}},
            "data": {"info": {"party_index": i}},
            "fake": {"args": args},
        }
        name = f"config_party{i}.yml"
        (tmp_path / name).write_text(json.dumps(doc, indent=2))
        party_files.append(name)
    sweep = {
        "name": f"fake-{style}",
        "engine": fake_engine(style),
        "configs": {"aggregator": "config_agg.yml", "parties": party_files},
        "parameters": parameters or {},
        "timeouts": timeouts or FAST,
        "parallel": 1,
    }
    path = tmp_path / "sweep.yml"
    path.write_text(json.dumps(sweep, indent=2))
    return path


async def run(tmp_path: Path, sweep: Path, retries: int = 0) -> tuple[RunResult, ListSink]:
    sink = ListSink()
    settings = RunSettings(sweep=sweep, out=tmp_path / "run", retries=retries, ports_dir=tmp_path / "ports")
    result = await run_sweep(settings, sink)
    return result, sink


def ledger(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def spawned_pids(run_dir: Path) -> list[int]:
    docs = [json.loads(line) for line in (run_dir / "procs.jsonl").read_text().splitlines()]
    return [int(d["pid"]) for d in docs if d["event"] == "spawn"]


def assert_no_process_left(run_dir: Path, expected: int) -> None:
    pids = spawned_pids(run_dir)
    assert len(pids) == expected
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def transcript(run_dir: Path, trial_id: str, name: str) -> str:
    return (run_dir / "trials" / trial_id / f"{name}.log").read_text(errors="replace")


# -- good trials --------------------------------------------------------------------------------


async def test_ibmfl_trial_ok(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "ibmfl", timeouts=ROOMY)
    doc = json.loads(sweep.read_text())
    # The parties must end by the stop line, which they do at once: the grace period after it is
    # a bound for a busy machine, not the fake's 0.5 s, after which a SIGTERM would end them.
    doc["engine"]["stop"]["grace_s"] = 30.0
    sweep.write_text(json.dumps(doc))
    result, sink = await run(tmp_path, sweep)
    run_dir = result.run_dir
    [record] = ledger(run_dir)
    assert record["status"] == "ok", record["reason"]
    assert record["phase"] is None
    assert record["attempts"] == 1
    assert record["aggregator_exit"] == 0
    assert record["rounds_completed"] is None  # IBM FL logs no round line
    assert [p["exit_code"] for p in record["parties"]] == [0, 0]
    for party in record["parties"]:
        metrics = party["metrics"]
        assert metrics["acc"] == pytest.approx(0.9191919191919192)
        assert metrics["precision weighted"] == pytest.approx(0.93)
        assert "loss" not in metrics
    assert set(record["durations"]) == set(PHASES)
    assert [e.phase for e in sink.of(PhaseReached)] == PHASES
    # IBM FL's parties stay up after the aggregator's STOP; the stop line, not a signal, ends them.
    for i in range(2):
        log = transcript(run_dir, "t00000", f"party{i}")
        received = log.index("received a STOP request")
        sent = log.index("# seel: sent 'STOP'", received)
        assert log.index("Party stop successful") > sent
        assert "SIGTERM" not in log
    assert_no_process_left(run_dir, 3)
    frame = pl.read_parquet(run_dir / "results.parquet")
    assert frame.height == 2
    assert frame["status"].to_list() == ["ok", "ok"]
    assert frame["party"].to_list() == [0, 1]
    assert frame["acc"].to_list() == pytest.approx([0.9191919191919192] * 2)
    assert "loss" not in frame.columns
    assert (run_dir / "results.csv").exists()


async def test_builtin_trial_ok(tmp_path: Path) -> None:
    result, sink = await run(tmp_path, write_sweep(tmp_path, "builtin"))
    [record] = ledger(result.run_dir)
    assert record["status"] == "ok", record["reason"]
    assert record["rounds_completed"] == 2
    assert record["round_accuracies"] == pytest.approx([0.6, 0.7])
    assert [(e.round, e.accuracy) for e in sink.of(RoundFinished)] == [(1, 0.6), (2, 0.7)]
    assert [p["exit_code"] for p in record["parties"]] == [0, 0]  # left by themselves
    assert all(p["metrics"]["loss"] == pytest.approx(0.3125) for p in record["parties"])
    assert_no_process_left(result.run_dir, 3)
    frame = pl.read_parquet(result.run_dir / "results.parquet")
    assert frame["final_global_acc"].to_list() == pytest.approx([0.7, 0.7])


# -- IBM FL's quirks ----------------------------------------------------------------------------


async def test_ibmfl_taken_port_ends_the_trial_at_start(tmp_path: Path) -> None:
    # "Aggregator start successful" alone must not pass the start phase.
    sweep = write_sweep(tmp_path, "ibmfl", agg_args="--port-taken")
    started = time.monotonic()
    result, _ = await run(tmp_path, sweep)
    [record] = ledger(result.run_dir)
    assert record["status"] != "ok"
    assert record["phase"] == "start"
    assert record["durations"]["start"] < FAST["start"]  # ended by the marker, not the timeout
    assert time.monotonic() - started < 10
    assert_no_process_left(result.run_dir, 3)


async def test_ibmfl_taken_port_is_failed_and_retried(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "ibmfl", agg_args="--port-taken")
    result, sink = await run(tmp_path, sweep, retries=1)
    [record] = ledger(result.run_dir)
    assert record["status"] == "failed"
    assert record["phase"] == "start"
    assert "Address already in use" in record["reason"]
    assert record["attempts"] == 2
    assert [e.attempt for e in sink.of(TrialStarted)] == [1, 2]
    assert [e.will_retry for e in sink.of(TrialFinished)] == [True, False]


async def test_ibmfl_missing_section_fails_at_init(tmp_path: Path) -> None:
    result, _ = await run(tmp_path, write_sweep(tmp_path, "ibmfl", agg_args="--missing-section"))
    [record] = ledger(result.run_dir)
    assert record["status"] == "failed"
    assert record["phase"] == "init"
    # the first ERROR line (the marker's line is INFO, as IBM FL prints it)
    assert record["reason"] == "aggregator: 'NoneType' object is not callable"
    assert record["durations"]["init"] < FAST["init"]
    assert_no_process_left(result.run_dir, 3)


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "args", "phase"),
    [
        ("party", "--hang-on REGISTER", "register"),
        ("aggregator", "--hang-on TRAIN", "train"),
    ],
)
async def test_hang_is_a_timeout_in_its_phase(tmp_path: Path, who: str, args: str, phase: str) -> None:
    timeouts = {**FAST, phase: 0.5}
    if who == "party":
        sweep = write_sweep(tmp_path, "ibmfl", party_args=(args, ""), timeouts=timeouts)
    else:
        sweep = write_sweep(tmp_path, "ibmfl", agg_args=args, timeouts=timeouts)
    result, _ = await run(tmp_path, sweep)
    [record] = ledger(result.run_dir)
    assert record["status"] == "timeout"
    assert record["phase"] == phase
    assert re.search(r"not seen within the (register|train) timeout of 0\.5 s", record["reason"]), record["reason"]
    assert 0.5 <= record["durations"][phase] < 0.5 + 5
    assert record["elapsed_s"] < sum(timeouts.values()) + 5
    assert_no_process_left(result.run_dir, 3)


async def test_crash_is_crashed_in_its_phase(tmp_path: Path) -> None:
    result, _ = await run(tmp_path, write_sweep(tmp_path, "ibmfl", agg_args="--crash-on TRAIN"))
    [record] = ledger(result.run_dir)
    assert record["status"] == "crashed"
    assert record["phase"] == "train"
    assert record["reason"] == "aggregator: RuntimeError: aggregator crashed on TRAIN"
    assert record["aggregator_exit"] == 1
    assert_no_process_left(result.run_dir, 3)


async def test_exit_is_crashed_with_its_code(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "builtin", party_args=("", "--exit-on REGISTER 3"))
    result, _ = await run(tmp_path, sweep)
    [record] = ledger(result.run_dir)
    assert record["status"] == "crashed"
    assert record["phase"] == "register"
    assert "party1 exited with code 3" in record["reason"]
    assert record["parties"][1]["exit_code"] == 3
    assert_no_process_left(result.run_dir, 3)


async def test_child_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    # party0 ignores SIGTERM and hangs on the stop line: only SIGKILL ends it.
    sweep = write_sweep(tmp_path, "ibmfl", party_args=("--ignore-term --hang-on STOP", ""))
    result, _ = await run(tmp_path, sweep)
    [record] = ledger(result.run_dir)
    assert record["status"] == "ok", record["reason"]
    assert record["parties"][0]["exit_code"] == -9
    assert record["parties"][1]["exit_code"] == 0
    log = transcript(result.run_dir, "t00000", "party0")
    assert "# seel: sending SIGTERM" in log
    assert "# seel: sending SIGKILL" in log
    assert_no_process_left(result.run_dir, 3)


async def test_flooding_child(tmp_path: Path) -> None:
    flood = 5 << 20
    sweep = write_sweep(tmp_path, "ibmfl", party_args=(f"--flood {flood}", ""), timeouts={**FAST, "init": 10})
    result, _ = await run(tmp_path, sweep)
    [record] = ledger(result.run_dir)
    assert record["status"] == "ok", record["reason"]
    assert record["parties"][0]["metrics"]["acc"] == pytest.approx(0.9191919191919192)
    size = (result.run_dir / "trials" / "t00000" / "party0.log").stat().st_size
    assert size > flood
    assert_no_process_left(result.run_dir, 3)


async def test_sweep_goes_on_after_a_failing_trial(tmp_path: Path) -> None:
    parameters = {"party[0].fake.args": {"values": ["--crash-on REGISTER", "", "--missing-section", ""]}}
    sweep = write_sweep(tmp_path, "builtin", parameters=parameters)
    result, sink = await run(tmp_path, sweep)
    records = ledger(result.run_dir)
    assert [r["status"] for r in records] == ["crashed", "ok", "failed", "ok"]
    assert [r["phase"] for r in records] == ["register", None, "init", None]
    assert result.tally.by_status == {"crashed": 1, "ok": 2, "failed": 1}
    assert len(sink.of(TrialFinished)) == 4
    assert_no_process_left(result.run_dir, 12)
    frame = pl.read_parquet(result.run_dir / "results.parquet")
    assert frame.height == 8
    rows = frame.filter(pl.col("status") == "ok")
    assert rows["trial_id"].unique().sort().to_list() == ["t00001", "t00003"]
    assert rows["acc"].to_list() == pytest.approx([0.9] * 4)
    assert frame["party[0].fake.args"].to_list()[::2] == ["--crash-on REGISTER", "", "--missing-section", ""]


async def test_party_marker_followed_by_many_lines_is_not_lost(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "builtin", agg_args="--ready-after 1.5", party_args=("--chatter 300", ""))
    result, _ = await run(tmp_path, sweep)
    [record] = ledger(result.run_dir)
    assert record["status"] == "ok", record["reason"]


# -- ended from outside -------------------------------------------------------------------------


async def test_a_trial_the_source_prunes_is_stopped_and_recorded_as_pruned(tmp_path: Path) -> None:
    from seel.grid import GridSource
    from seel.plan import Plan
    from seel.store import RunDir

    class PruneAfterFirstRound(GridSource):
        def observe(self, trial_id: str, round: int, value: float | None) -> bool:
            return round >= 1

    def source(plan: Plan, run_dir: RunDir) -> GridSource:
        return PruneAfterFirstRound.of(plan.spec, run_dir.done_ids())

    # The aggregator would hang after round 1 until the train timeout; pruning ends it first.
    sweep = write_sweep(tmp_path, "builtin", agg_args="--hang-on ROUND1",
                        timeouts={**FAST, "train": 60})
    sink = ListSink()
    settings = RunSettings(sweep=sweep, out=tmp_path / "run", retries=2, ports_dir=tmp_path / "ports")
    result = await run_sweep(settings, sink, source=source)
    [record] = ledger(result.run_dir)
    assert (record["status"], record["phase"]) == ("pruned", "train")
    assert record["reason"] == "pruned after round 1"
    assert record["rounds_completed"] == 1 and record["attempts"] == 1  # a result: not retried
    assert record["durations"]["train"] < 30  # ended by the pruning, not by the train timeout
    assert result.tally.by_status == {"pruned": 1}
    assert_no_process_left(result.run_dir, 3)
