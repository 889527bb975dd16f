"""Fault injection: a child that crashes, hangs, ignores SIGTERM, floods its terminal or loses its
port, in every phase and in every role where the fault can happen.

Each scenario runs a whole sweep in this process: the faulty trial and, after it, a good one.
It then checks that the faulty trial ended with the expected status and phase within its phase
timeout plus 5 s, that the good trial after it ran to `ok`, that the ledger holds each trial
once, and that no process of the sweep is left, by pid and by process group. The time the
faulty phase took, its stop ladder included, is recorded as the scenario's recovery time.

Faults come from the fake FL processes (tests/children/fakefl.py) where the built-in engine adds
nothing, and from the built-in engine's own `simulation:` knobs for faults in training rounds.
A few scenarios run under `make test`; the rest are marked `reliability_full`.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from seel.events import Event, TrialFinished, TrialStarted
from seel.ports import DEFAULT_RANGE, PortAllocator, bindable
from seel.run import RunSettings, run_sweep
from tests.flkit import agg_doc, party_doc, write_yaml
from tests.reliability.kit import (
    assert_ended_in_time,
    assert_ledger_intact,
    assert_phase_in_time,
    assert_run_clean,
    live_children,
    proc_docs,
)
from tests.test_trial_fake import FAST, ROOMY, ListSink, fake_engine, write_sweep

FULL = pytest.mark.reliability_full
Recovery = Callable[[str, float], None]
FAKE_STOP = fake_engine("builtin")["stop"]  # the stop ladder's grace periods on the fake
HANG_S = 0.5  # the timeout of the phase a child hangs in
INIT_HANG_S = 3.0  # init also starts three interpreters, on a machine that may be busy
REAL_TIMEOUTS: dict[str, float] = {
    "init": 15,
    "start": 5,
    "register": 5,
    "train": 10,
    "eval": 5,
    "stop": 5,
}


# -- running a sweep and checking what it left ---------------------------------------------------


async def sweep(
    tmp_path: Path,
    path: Path,
    *,
    retries: int = 0,
    sink: ListSink | None = None,
    port_range: tuple[int, int] | None = None,
) -> tuple[Path, ListSink]:
    """Run the sweep in this process; its run directory and every event it emitted."""
    sink = sink or ListSink()
    settings = RunSettings(
        sweep=path,
        out=tmp_path / "run",
        retries=retries,
        ports_dir=tmp_path / "ports",
        port_range=port_range,
    )
    result = await run_sweep(settings, sink)
    assert not result.interrupted
    return result.run_dir, sink


def by_trial(run_dir: Path, trial_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The ledger's records by trial, after checking it holds exactly these trials, once each."""
    return {d["trial_id"]: d for d in assert_ledger_intact(run_dir, trial_ids)}


def assert_nothing_survives(run_dir: Path, spawns: dict[str, int]) -> None:
    """Each trial spawned as many processes as expected, and none of the sweep's is left."""
    counted: dict[str, int] = {}
    for doc in proc_docs(run_dir):
        if doc.get("event") == "spawn" and doc.get("trial"):
            counted[doc["trial"]] = counted.get(doc["trial"], 0) + 1
    assert counted == spawns
    assert_run_clean(run_dir)  # every spawn of the process ledger, a fork server's too
    assert live_children() == []  # and nothing this process started outside the ledger


def fault_then_ok(
    run_dir: Path, status: str, phase: str | None, timeout_s: float
) -> tuple[dict[str, Any], float]:
    """The first trial ended as expected and in time, the second one ran to ok, nothing is left."""
    records = by_trial(run_dir, ["t00000", "t00001"])
    fault, good = records["t00000"], records["t00001"]
    took = assert_ended_in_time(fault, status, phase, timeout_s)
    assert (good["status"], good["attempts"]) == ("ok", 1), good["reason"]
    assert_nothing_survives(run_dir, {"t00000": 3, "t00001": 3})
    return fault, took


def transcript(run_dir: Path, trial_id: str, name: str) -> str:
    return (run_dir / "trials" / trial_id / f"{name}.log").read_text(errors="replace")


def pgid_of(run_dir: Path, trial_id: str, name: str) -> int:
    [pgid] = [
        int(d["pgid"])
        for d in proc_docs(run_dir)
        if d.get("event") == "spawn" and d.get("trial") == trial_id and d.get("name") == name
    ]
    return pgid


def timeout_reason(child: str, marker: str | None, phase: str, timeout_s: float) -> str:
    """What a trial ended by the controller's own phase timeout gives as its reason."""
    shown = ".*" if marker is None else re.escape(repr(marker))
    return rf"^{child}: {shown} not seen within the {phase} timeout of {timeout_s:g} s$"


# -- sweeps on the fake and on the built-in engine ----------------------------------------------


def fake_fault_sweep(tmp_path: Path, who: str, args: str, timeouts: Mapping[str, float]) -> Path:
    """Two trials on the fake builtin engine: `who` (aggregator or partyN) runs with `args`, then
    without."""
    key = "fake.args" if who == "aggregator" else f"party[{who.removeprefix('party')}].fake.args"
    parameters = {key: {"values": [args, ""]}}
    return write_sweep(tmp_path, "builtin", parameters=parameters, timeouts=dict(timeouts))


def builtin_sweep(
    tmp_path: Path,
    parameters: dict[str, Any],
    *,
    timeouts: Mapping[str, float] = REAL_TIMEOUTS,
    rounds: int = 3,
    max_timeout: float = 0,
) -> Path:
    """A sweep on the shipped built-in engine with two parties whose faults can be swept."""
    write_yaml(tmp_path / "config_agg.yml", agg_doc(5000, rounds=rounds, max_timeout=max_timeout))
    for i in range(2):
        sim = {"crash_at_round": None, "hang_at_round": None}
        write_yaml(tmp_path / f"config_party{i}.yml", party_doc(i, 2, 5000, 8085 + i, **sim))
    doc = {
        "name": "faults-builtin",
        "engine": "builtin",
        "configs": {
            "aggregator": "config_agg.yml",
            "parties": ["config_party0.yml", "config_party1.yml"],
        },
        "parameters": parameters,
        "timeouts": dict(timeouts),
        "parallel": 1,
    }
    path = tmp_path / "sweep.yml"
    path.write_text(json.dumps(doc, indent=2))
    return path


def exit_code(record: dict[str, Any], who: str) -> int | None:
    """The exit code a trial's record gives for `who` (aggregator or partyN)."""
    if who == "aggregator":
        code = record["aggregator_exit"]
    else:
        code = record["parties"][int(who.removeprefix("party"))]["exit_code"]
    return None if code is None else int(code)


# -- 1. crashes ---------------------------------------------------------------------------------

# (who, the command it crashes or hangs on, the phase that command belongs to). The aggregator
# gets no command in the register phase; a builtin party gets EVAL and STOP from the aggregator,
# not on its terminal (the fake's mailbox stands for that).
EVERY_PHASE = [
    ("aggregator", "INIT", "init"),
    ("party1", "INIT", "init"),
    ("aggregator", "START", "start"),
    ("party1", "START", "start"),
    ("party1", "REGISTER", "register"),
    ("aggregator", "TRAIN", "train"),
    ("aggregator", "EVAL", "eval"),
    ("party1", "EVAL", "eval"),
    ("aggregator", "STOP", "stop"),
    ("party1", "STOP", "stop"),
]


def every_phase(quick: tuple[str, str] | None = None) -> list[Any]:
    """EVERY_PHASE as parameters, all but `quick` (who, command) marked reliability_full."""
    return [
        pytest.param(
            who,
            command,
            phase,
            marks=() if (who, command) == quick else FULL,
            id=f"{who}-{command}",
        )
        for who, command, phase in EVERY_PHASE
    ]


@pytest.mark.parametrize(("who", "command", "phase"), every_phase())
async def test_crash_is_crashed_in_its_phase(
    tmp_path: Path, recovery: Recovery, who: str, command: str, phase: str
) -> None:
    path = fake_fault_sweep(tmp_path, who, f"--crash-on {command}", FAST)
    run_dir, _ = await sweep(tmp_path, path)
    fault, took = fault_then_ok(run_dir, "crashed", phase, FAST[phase])
    # the exception line that ends the traceback: the cause, not the last line printed
    kind = "aggregator" if who == "aggregator" else "party"
    assert fault["reason"] == f"{who}: RuntimeError: {kind} crashed on {command}"
    assert fault["durations"][phase] < FAST[phase]  # ended by the traceback, not by a timeout
    assert exit_code(fault, who) not in (0, None)
    recovery(f"crash: {who} on {command} (fake)", took)


@pytest.mark.parametrize(
    ("crash_round", "max_timeout"),
    [
        pytest.param(1, 0, id="round1"),
        pytest.param(2, 0, id="round2", marks=FULL),
        pytest.param(1, 5, id="round1-max_timeout", marks=FULL),
        pytest.param(2, 5, id="round2-max_timeout", marks=FULL),
    ],
)
async def test_party_crash_in_a_training_round_is_crashed_in_train(
    tmp_path: Path, recovery: Recovery, crash_round: int, max_timeout: float
) -> None:
    # The aggregator also reports "Quorum cannot be reached" (a failure): the engine lists the
    # party's traceback first, so the trial is a crash.
    parameters = {"party[1].simulation.crash_at_round": {"values": [crash_round, None]}}
    path = builtin_sweep(tmp_path, parameters, max_timeout=max_timeout)
    run_dir, _ = await sweep(tmp_path, path)
    fault, took = fault_then_ok(run_dir, "crashed", "train", REAL_TIMEOUTS["train"])
    assert fault["reason"] == (
        f"party1: SimulatedCrash: simulated crash at round {crash_round} (simulation.crash_at_round)"
    )
    assert fault["rounds_completed"] == crash_round - 1
    assert fault["durations"]["train"] < REAL_TIMEOUTS["train"]
    assert fault["parties"][1]["exit_code"] not in (0, None)
    recovery(f"crash: party1 in round {crash_round}, max_timeout {max_timeout} (builtin)", took)


# -- 2. hangs -----------------------------------------------------------------------------------

# What a hung child leaves the controller waiting for (None: the metrics pattern).
AWAITED = {
    ("aggregator", "init"): "Aggregator initialization successful",
    ("party1", "init"): "Party initialization successful",
    ("aggregator", "start"): "Aggregator start successful",
    ("party1", "start"): "Party start successful",
    ("party1", "register"): "Registration Successful",
    ("aggregator", "train"): "Finished Global Training",
    ("aggregator", "eval"): "Finished eval requests",
    ("party1", "eval"): None,
    ("aggregator", "stop"): "Aggregator stop successful",
    ("party1", "stop"): "process exit",
}


@pytest.mark.parametrize(("who", "command", "phase"), every_phase(quick=("party1", "REGISTER")))
async def test_hang_is_a_timeout_in_its_phase(
    tmp_path: Path, recovery: Recovery, who: str, command: str, phase: str
) -> None:
    timeout_s = INIT_HANG_S if phase == "init" else HANG_S
    path = fake_fault_sweep(tmp_path, who, f"--hang-on {command}", {**FAST, phase: timeout_s})
    run_dir, _ = await sweep(tmp_path, path)
    fault, took = fault_then_ok(run_dir, "timeout", phase, timeout_s)
    assert re.match(timeout_reason(who, AWAITED[who, phase], phase, timeout_s), fault["reason"])
    assert fault["durations"][phase] >= timeout_s
    recovery(f"hang: {who} on {command} (fake)", took)


@pytest.mark.parametrize(
    ("hang_round", "max_timeout"),
    [
        pytest.param(1, 1, id="round1-max_timeout", marks=FULL),
        pytest.param(2, 1, id="round2-max_timeout", marks=FULL),
        pytest.param(1, 0, id="round1-no-max_timeout", marks=FULL),
        pytest.param(2, 0, id="round2-no-max_timeout", marks=FULL),
    ],
)
async def test_party_hang_in_a_training_round_is_a_timeout_in_train(
    tmp_path: Path, recovery: Recovery, hang_round: int, max_timeout: float
) -> None:
    # With max_timeout the aggregator gives up on the round by itself; without it the round
    # waits forever and the controller's train timeout ends the trial.
    train_s = 10.0 if max_timeout else 2.0
    parameters = {"party[1].simulation.hang_at_round": {"values": [hang_round, None]}}
    timeouts = {**REAL_TIMEOUTS, "train": train_s}
    path = builtin_sweep(tmp_path, parameters, timeouts=timeouts, max_timeout=max_timeout)
    run_dir, _ = await sweep(tmp_path, path)
    fault, took = fault_then_ok(run_dir, "timeout", "train", max_timeout or train_s)
    assert fault["rounds_completed"] == hang_round - 1
    if max_timeout:
        assert fault["reason"].startswith("aggregator: ")
        assert "Timeout elapsed before quorum was reached" in fault["reason"]
        assert max_timeout <= fault["durations"]["train"] < train_s
    else:
        expected = timeout_reason("aggregator", "Finished Global Training", "train", train_s)
        assert re.match(expected, fault["reason"])
        assert fault["durations"]["train"] >= train_s
    assert "Simulating a hang" in transcript(run_dir, "t00000", "party1")
    recovery(f"hang: party1 in round {hang_round}, max_timeout {max_timeout} (builtin)", took)


# -- 3. a child that ignores SIGTERM ------------------------------------------------------------

RUNG = re.compile(r"^\s*(?P<t>[\d.]+) # seel: (?P<what>.*)$", re.M)


def rungs(log: str) -> list[tuple[float, str]]:
    """The controller's notes in a transcript: (seconds since spawn, text)."""
    return [(float(m["t"]), m["what"]) for m in RUNG.finditer(log)]


@pytest.mark.parametrize(
    ("who", "command", "phase"),
    [
        pytest.param("aggregator", "TRAIN", "train", marks=FULL, id="aggregator-TRAIN"),
        pytest.param("party1", "STOP", "stop", marks=FULL, id="party1-STOP"),
    ],
)
async def test_child_ignoring_sigterm_is_killed(
    tmp_path: Path, recovery: Recovery, who: str, command: str, phase: str
) -> None:
    args = f"--ignore-term --hang-on {command}"
    path = fake_fault_sweep(tmp_path, who, args, {**FAST, phase: HANG_S})
    run_dir, _ = await sweep(tmp_path, path)
    fault, took = fault_then_ok(run_dir, "timeout", phase, HANG_S)
    assert exit_code(fault, who) == -9
    group = pgid_of(run_dir, "t00000", who)
    notes = rungs(transcript(run_dir, "t00000", who))
    texts = [what for _, what in notes]
    term, kill = f"sending SIGTERM to group {group}", f"sending SIGKILL to group {group}"
    ladder = [term, kill, "exited with code -9"]
    if who == "aggregator":  # the aggregator has a stop line; builtin parties have none
        waiting = f"waiting {FAKE_STOP['grace_s']:g} s for exit after 'STOP'"
        ladder = ["sent 'STOP'", waiting, *ladder]

    def rung(text: str) -> str | None:  # a rung's note goes on with the pid and the wait
        return next((r for r in ladder if text.startswith(r)), None)

    assert [rung(t) for t in texts if rung(t)] == ladder, texts
    at = {rung(what): t for t, what in notes}
    assert at[kill] - at[term] >= FAKE_STOP["term_grace_s"] - 0.01  # SIGKILL after the grace
    recovery(f"ignores SIGTERM: {who} hung on {command} (fake)", took)


# -- 4. a terminal flooded with output, invalid UTF-8 and escape sequences ----------------------


def memory_kb() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process, in kB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}


def reset_peak_memory() -> None:
    """Start VmHWM afresh, so that it is the peak of what follows."""
    # Where that is not allowed, VmHWM also holds earlier peaks: the check only gets stricter.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


@FULL
async def test_flood_of_100_mb_completes_and_does_not_grow_the_controller(
    tmp_path: Path, recovery: Recovery
) -> None:
    flood = 100 << 20
    init_s = 60.0
    path = fake_fault_sweep(tmp_path, "party0", f"--flood {flood}", {**FAST, "init": init_s})
    reset_peak_memory()
    before = memory_kb()["VmRSS"]
    run_dir, _ = await sweep(tmp_path, path)
    grown_mb = (memory_kb()["VmHWM"] - before) / 1024
    assert grown_mb < 50, f"the controller grew by {grown_mb:.0f} MB"
    records = by_trial(run_dir, ["t00000", "t00001"])
    for record in records.values():
        assert (record["status"], record["attempts"]) == ("ok", 1), record["reason"]
        assert [p["metrics"]["acc"] for p in record["parties"]] == [0.9, 0.9]
        assert record["round_accuracies"] == [0.6, 0.7]
    log = run_dir / "trials" / "t00000" / "party0.log"
    assert log.stat().st_size < flood  # the transcript is bounded
    with log.open("rb") as f:
        f.seek(-4096, 2)
        assert b"# seel: transcript limit reached" in f.read()
    assert_nothing_survives(run_dir, {"t00000": 3, "t00001": 3})
    recovery(
        "flood: party0 prints 100 MB before init (fake)",
        assert_phase_in_time(records["t00000"], "init", init_s),
    )


@pytest.mark.parametrize("who", [pytest.param(w, marks=FULL) for w in ("aggregator", "party0")])
async def test_invalid_utf8_and_escape_sequences_complete(
    tmp_path: Path, recovery: Recovery, who: str
) -> None:
    path = fake_fault_sweep(tmp_path, who, "--binary", FAST)
    run_dir, _ = await sweep(tmp_path, path)
    records = by_trial(run_dir, ["t00000", "t00001"])
    for record in records.values():
        assert (record["status"], record["attempts"]) == ("ok", 1), record["reason"]
        assert [p["metrics"]["acc"] for p in record["parties"]] == [0.9, 0.9]
        assert record["round_accuracies"] == [0.6, 0.7]
    log = transcript(run_dir, "t00000", who)
    assert "\ufffd invalid utf-8" in log  # undecodable bytes replaced, the line kept
    assert "\x1b[31mred\x1b[0m" in log  # escapes are text to the controller
    assert_nothing_survives(run_dir, {"t00000": 3, "t00001": 3})
    took = assert_phase_in_time(records["t00000"], "init", FAST["init"])
    recovery(f"invalid UTF-8 and escapes: {who} (fake)", took)


# -- 5. ports -----------------------------------------------------------------------------------


def quiet_ports() -> tuple[int, int]:
    """Ports that nothing on this machine takes unasked: above the kernel's ephemeral range
    (outgoing connections) and outside SEEL's default range. A test that narrows a sweep to a few
    ports must not pick them where every other sweep of the machine (other test runs included,
    with registries of their own) binds ports at random: one could take a port of the block
    between the test's check and the sweep's retry, and the retry would fail too."""
    text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
    ephemeral_high = int(text.split()[1])
    if ephemeral_high <= 65535 - 500 and ephemeral_high >= DEFAULT_RANGE[1]:
        return ephemeral_high + 1, 65535
    return DEFAULT_RANGE  # an unusual kernel setting: the old hazard, for want of better


def free_block(n: int) -> int:
    """The first of n consecutive ports, free now, in ports no other program takes unasked."""
    low, high = quiet_ports()
    rng = random.Random()
    for _ in range(1000):
        first = rng.randrange(low, high - n)
        if all(bindable(p) for p in range(first, first + n)):
            return first
    raise AssertionError(f"no {n} consecutive free ports in {low}-{high}")


def squat(port: int) -> socket.socket:
    """Another program listening on `port`."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@dataclass
class FreesPortOnFirstFinish(ListSink):
    """Closes the squatting socket when the first trial (or attempt) is reported finished."""

    squatter: socket.socket | None = None

    def emit(self, event: Event) -> None:
        super().emit(event)
        if isinstance(event, TrialFinished) and self.squatter is not None:
            self.squatter.close()
            self.squatter = None


@FULL
async def test_port_taken_before_the_trial_is_not_handed_out(tmp_path: Path) -> None:
    first = free_block(4)
    with squat(first + 1):
        path = write_sweep(tmp_path, "builtin", parameters={"fake.args": {"values": ["", ""]}})
        run_dir, _ = await sweep(tmp_path, path, port_range=(first, first + 3))
    records = by_trial(run_dir, ["t00000", "t00001"])
    for record in records.values():
        assert (record["status"], record["attempts"]) == ("ok", 1), record["reason"]
        assert sorted(record["ports"]) == [first, first + 2, first + 3]
    assert_nothing_survives(run_dir, {"t00000": 3, "t00001": 3})


@pytest.mark.parametrize("retries", [pytest.param(1, id="retried"), pytest.param(0, marks=FULL)])
async def test_no_free_port_is_failed_and_retried(
    tmp_path: Path, recovery: Recovery, retries: int
) -> None:
    # All but one port of the range are free: the first attempt cannot start. The squatter goes
    # away once that attempt is reported, so a retry, or else the next trial, gets the range.
    first = free_block(3)
    sink = FreesPortOnFirstFinish(squatter=squat(first + 1))
    parameters = {"fake.args": {"values": ["", ""]}}
    path = write_sweep(tmp_path, "builtin", parameters=parameters, timeouts=ROOMY)  # none hangs
    try:
        run_dir, _ = await sweep(
            tmp_path, path, retries=retries, sink=sink, port_range=(first, first + 2)
        )
    finally:
        if sink.squatter is not None:
            sink.squatter.close()
    finished = sink.of(TrialFinished)
    failed = json.loads(json.dumps(finished[0].outcome.to_json()))  # as the ledger has it
    assert failed["trial_id"] == "t00000"
    took = assert_ended_in_time(failed, "failed", None, ROOMY["init"])
    assert failed["phase"] is None  # no process was started
    assert failed["retryable"]
    assert f"only 2 of 3 free ports in {first}-{first + 2}" in failed["reason"]
    records = by_trial(run_dir, ["t00000", "t00001"])
    assert [(e.trial_id, e.attempt) for e in sink.of(TrialStarted)] == (
        [("t00000", 1), ("t00000", 2), ("t00001", 1)] if retries else [("t00000", 1), ("t00001", 1)]
    )
    assert [e.will_retry for e in finished] == ([True, False, False] if retries else [False, False])
    if retries:
        assert (records["t00000"]["status"], records["t00000"]["attempts"]) == ("ok", 2)
    else:
        assert records["t00000"] == failed  # recorded as it was reported
    assert (records["t00001"]["status"], records["t00001"]["attempts"]) == ("ok", 1)
    assert_nothing_survives(run_dir, {"t00000": 3, "t00001": 3} if retries else {"t00001": 3})
    recovery(f"no free port, retries {retries} (fake)", took)


@pytest.mark.parametrize(
    ("who", "retries"),
    [
        pytest.param("aggregator", 1, id="aggregator-retried", marks=FULL),
        pytest.param("party0", 1, id="party0-retried", marks=FULL),
        pytest.param("aggregator", 0, id="aggregator-no-retries", marks=FULL),
    ],
)
async def test_port_stolen_between_check_and_bind_is_failed_and_retried(
    tmp_path: Path, recovery: Recovery, monkeypatch: pytest.MonkeyPatch, who: str, retries: int
) -> None:
    # The allocator checks that the block is free; right after, another program takes one of its
    # ports, so the engine process finds it taken when it binds on START.
    index = 0 if who == "aggregator" else 1 + int(who.removeprefix("party"))
    reserve = PortAllocator.reserve
    squatters: list[socket.socket] = []

    def reserve_then_lose_one(self: PortAllocator, n: int) -> list[int]:
        ports = reserve(self, n)
        if not squatters:
            squatters.append(squat(ports[index]))
        return ports

    monkeypatch.setattr(PortAllocator, "reserve", reserve_then_lose_one)
    parameters = {"hyperparams.global.rounds": {"values": [2, 3]}}
    path = builtin_sweep(tmp_path, parameters)
    try:
        run_dir, sink = await sweep(tmp_path, path, retries=retries)
        stolen = squatters[0].getsockname()[1]
    finally:
        for sock in squatters:
            sock.close()
    finished = sink.of(TrialFinished)
    failed = json.loads(json.dumps(finished[0].outcome.to_json()))  # as the ledger has it
    assert failed["trial_id"] == "t00000"
    took = assert_ended_in_time(failed, "failed", "start", REAL_TIMEOUTS["start"])
    assert failed["retryable"]
    assert failed["reason"].startswith(f"{who}: ")
    assert f"Address already in use: 127.0.0.1:{stolen}" in failed["reason"]
    assert failed["ports"][index] == stolen
    # Its own 3, or the SIGTERM of the stop ladder when that came first: a builtin party has no
    # stop line, so its ladder starts at SIGTERM.
    assert exit_code(failed, who) in ((3,) if who == "aggregator" else (3, -15))
    records = by_trial(run_dir, ["t00000", "t00001"])
    assert [e.will_retry for e in finished] == ([True, False, False] if retries else [False, False])
    if retries:
        retried = records["t00000"]
        assert (retried["status"], retried["attempts"]) == ("ok", 2), retried["reason"]
        assert stolen not in retried["ports"]
    else:
        assert records["t00000"] == failed
    assert (records["t00001"]["status"], records["t00001"]["attempts"]) == ("ok", 1)
    assert stolen not in records["t00001"]["ports"]
    assert_nothing_survives(
        run_dir, {"t00000": 6, "t00001": 3} if retries else {"t00000": 3, "t00001": 3}
    )
    recovery(f"port stolen: {who}, retries {retries} (builtin)", took)
