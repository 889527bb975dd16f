"""Deployments kept between trials (engine `reuse:`, seel/deployments.py), on the fake of a
Flower-shaped deployment (tests/children/flowerish.py): which trials share one, which start
afresh, what ends one, how many idle ones are kept, and that none outlives the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import os
import re
import signal
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import polars as pl
import pytest
from rich.console import Console

from seel.context import Machine
from seel.enginefile import parse_engine
from seel.errors import SpecError
from seel.events import DeploymentReused, Event, SweepStarted, TrialFinished, TrialStarted
from seel.outcome import Outcome, PartyResult, Status
from seel.ports import PortAllocator
from seel.procs import ProcessLedger
from seel.proctree import snapshot
from seel.render.jsonl import JsonLinesSink
from seel.render.live import LiveSink
from seel.render.plain import PlainSink
from seel.run import RunSettings, prepare, run_sweep
from seel.space import TrialSpec
from seel.trial import run_trial

from .reliability.kit import SpawnLog
from .reliability.kit import assert_nothing_left as kit_nothing_left
from .reliability.test_controller_kills import EVENT_TIMEOUT_S, Controller
from .test_engine_commands import ENGINE, write_sweep
from .test_trial_fake import ListSink, ledger, transcript

REUSE = {"when_only": ["run_config", "outcome"], "from_phase": "train"}


def reuse_sweep(tmp: Path, parameters: dict[str, Any], reuse: Any = REUSE) -> Path:
    path = write_sweep(tmp)
    doc = json.loads(path.read_text())
    doc["engine"] = {**copy.deepcopy(ENGINE), "reuse": reuse}
    doc["parameters"] = parameters
    doc["parallel"] = 1
    path.write_text(json.dumps(doc))
    return path


def spawns(run_dir: Path) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in (run_dir / "procs.jsonl").read_text().splitlines()]
    return [d for d in docs if d["event"] == "spawn"]


def assert_nothing_left(run_dir: Path) -> None:
    """No process of the run's sessions is alive, nor a helper the link started in its own."""
    sessions = {int(d["pgid"]) for d in spawns(run_dir)}
    alive = [p for p in snapshot().values() if p.sid in sessions]
    assert alive == []
    for log in (run_dir / "trials").glob("*/aggregator.log"):
        for helper in re.findall(r"helper pid (\d+)", log.read_text()):
            assert int(helper) not in snapshot()


async def sweep(tmp: Path, parameters: dict[str, Any], reuse: Any = REUSE) -> tuple[Path, ListSink]:
    sink = ListSink()
    settings = RunSettings(
        sweep=reuse_sweep(tmp, parameters, reuse), out=tmp / "run", ports_dir=tmp / "ports"
    )
    result = await run_sweep(settings, sink)
    return result.run_dir, sink


# -- through a sweep ---------------------------------------------------------------------------


async def test_trials_differing_only_in_run_config_share_a_deployment(tmp_path: Path) -> None:
    run_dir, sink = await sweep(
        tmp_path,
        {
            "party.node_config.partition-id": {"values": [0, 1]},
            "run_config.lr": {"values": [0.1, 0.2]},
        },
    )
    records = ledger(run_dir)
    assert [r["status"] for r in records] == ["ok"] * 4, [r["reason"] for r in records]
    # the node-level value decides: t1 reuses t0's deployment, t3 reuses t2's
    assert [r["deployment"] for r in records] == ["t00000", "t00000", "t00002", "t00002"]
    assert [(e.trial_id, e.deployment) for e in sink.of(DeploymentReused)] == [
        ("t00001", "t00000"),
        ("t00003", "t00002"),
    ]
    assert [d["trial"] for d in spawns(run_dir) if d["name"] == "aggregator"] == [
        "t00000",
        "t00002",
    ]
    first, reused = records[0], records[1]
    assert first["ports"] == reused["ports"]
    assert "init" in first["durations"] and "init" not in reused["durations"]  # it skipped init
    # per-party metrics come from lines after the take: the fake node printed its own before
    assert first["parties"][0]["metrics"] == {"acc": 0.9, "loss": 0.25}
    assert reused["parties"][0]["metrics"] == {}
    assert reused["rounds_completed"] == 2
    # each trial's directory holds what the processes printed while it ran, with a note
    link = transcript(run_dir, "t00001", "aggregator")
    assert "serving trial t00001 from here on (the deployment trial t00000 started" in link
    assert "INFO: link ready" not in link
    assert "serving trial t00001" in transcript(run_dir, "t00000", "aggregator")
    assert 'run config lr=0.2 split="iid"' in transcript(run_dir, "t00001", "submit")
    # its own files, naming the same link
    assert (run_dir / "trials/t00001/home/conf.toml").read_text() == (
        run_dir / "trials/t00000/home/conf.toml"
    ).read_text()
    frame = pl.read_parquet(run_dir / "results.parquet")
    assert frame["deployment"].to_list() == ["t00000", "t00000", "t00002", "t00002"]
    assert frame["duration.init_s"].is_null().to_list() == [False, True, False, True]
    assert_nothing_left(run_dir)


async def test_without_reuse_every_trial_starts_its_own(tmp_path: Path) -> None:
    run_dir, sink = await sweep(tmp_path, {"run_config.lr": {"values": [0.1, 0.2]}}, reuse=None)
    records = ledger(run_dir)
    assert [(r["status"], r["deployment"]) for r in records] == [("ok", None), ("ok", None)]
    assert len([d for d in spawns(run_dir) if d["name"] == "aggregator"]) == 2
    assert sink.of(DeploymentReused) == []


async def test_a_failed_trials_deployment_is_not_reused(tmp_path: Path) -> None:
    run_dir, _ = await sweep(
        tmp_path,
        {"outcome": {"values": ["finished:failed", "finished:completed", "finished:completed"]}},
    )
    records = ledger(run_dir)
    assert [(r["status"], r["deployment"]) for r in records] == [
        ("failed", "t00000"),
        ("ok", "t00001"),
        ("ok", "t00001"),
    ]
    assert_nothing_left(run_dir)


async def test_an_interrupted_sweep_leaves_no_deployment(tmp_path: Path) -> None:
    """Cancelled (Ctrl-C) as t1 takes t0's deployment (it is still to start its run): both are
    stopped, t1 is interrupted."""
    sink = ListSink()
    reused = asyncio.Event()

    class Watch:
        def emit(self, event: Event) -> None:
            sink.emit(event)
            if isinstance(event, DeploymentReused):
                reused.set()

    settings = RunSettings(
        sweep=reuse_sweep(tmp_path, {"run_config.lr": {"values": [0.1, 0.2, 0.3]}}),
        out=tmp_path / "run",
        ports_dir=tmp_path / "ports",
    )
    task = asyncio.ensure_future(run_sweep(settings, Watch()))
    await asyncio.wait(
        [task, asyncio.ensure_future(reused.wait())],
        timeout=60,
        return_when=asyncio.FIRST_COMPLETED,
    )
    assert reused.is_set()
    task.cancel()
    result = await task
    assert result.interrupted
    finished = [e.outcome for e in sink.of(TrialFinished)]
    assert [o.status for o in finished][-1] is Status.INTERRUPTED
    assert_nothing_left(result.run_dir)


# -- the pool on one machine -------------------------------------------------------------------


class OneMachine:
    """Trials run one by one on a machine whose pool the test can look into."""

    def __init__(self, tmp: Path, parameters: dict[str, Any]) -> None:
        self.plan = prepare(RunSettings(reuse_sweep(tmp, parameters)))
        self.run = tmp / "run"
        (self.run / "trials").mkdir(parents=True)
        self.machine = Machine(
            self.plan,
            self.run,
            f"reuse-{os.getpid()}",
            ProcessLedger(self.run / "procs.jsonl"),
            PortAllocator(None, tmp / "ports"),
        )
        self.ctx = self.machine.context(lambda _: None)
        assert self.machine.deployments is not None
        self.pool = self.machine.deployments
        self.count = 0

    async def trial(self, **params: Any) -> Any:
        spec = TrialSpec(f"t{self.count:05d}", self.count, params, 0, 0)
        self.count += 1
        return await run_trial(self.ctx, spec, 1)


async def test_an_idle_deployment_whose_process_dies_is_discarded(tmp_path: Path) -> None:
    m = OneMachine(tmp_path, {"run_config.lr": {"values": [0.1, 0.2]}})
    try:
        first = await m.trial(**{"run_config.lr": 0.1})
        assert first.status is Status.OK
        [idle] = m.pool.idle
        os.killpg(idle.parties[0].pgid, signal.SIGKILL)
        await idle.parties[0].exited
        assert m.pool.idle == []
        second = await m.trial(**{"run_config.lr": 0.2})
        assert (second.status, second.deployment) == (Status.OK, "t00001")
        assert ("t00000", "a process ended while idle") in m.pool.stopped
    finally:
        await m.machine.aclose()
    assert_nothing_left(m.run)


async def test_the_least_recently_used_idle_deployment_is_evicted(tmp_path: Path) -> None:
    """One trial at a time: one idle deployment is kept beside the one in use."""
    m = OneMachine(tmp_path, {"party.node_config.partition-id": {"values": [0, 1, 2]}})
    key = "party.node_config.partition-id"
    try:
        outcomes = [await m.trial(**{key: p}) for p in (0, 1, 2, 1, 0)]
        assert [o.status for o in outcomes] == [Status.OK] * 5
        # at t2, t0's (least recently used) went; t3 reused t1's; t4 had to start afresh
        assert [o.deployment for o in outcomes] == [
            "t00000",
            "t00001",
            "t00002",
            "t00001",
            "t00004",
        ]
        assert [why for _, why in m.pool.stopped if why.startswith("evicted")] == [
            "evicted: a fresh deployment needed the room"
        ] * 2
        assert len(m.pool.idle) == 2
        # the directory of a trial whose deployment is up stays (a Ray node keeps it till the end)
        assert m.pool.in_use("t00001") and not m.pool.in_use("t00000")
    finally:
        await m.machine.aclose()
    assert m.pool.idle == []
    assert_nothing_left(m.run)


# -- the schema --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reuse", "lifecycle", "key", "why"),
    [
        ({"when_only": []}, None, "engine.reuse.when_only", "at least one"),
        (
            {"when_only": ["a..b"], "from_phase": "train"},
            None,
            "engine.reuse.when_only",
            "empty part",
        ),
        ({"when_only": ["a"]}, None, "engine.reuse.from_phase", "missing"),
        ({"when_only": ["a"], "from_phase": "stop"}, None, "engine.reuse.from_phase", "a phase of"),
        ({"when_only": ["a"], "from_phase": "eval", "x": 1}, None, "engine.reuse.x", "unknown key"),
        ({"when_only": ["a"], "from_phase": "eval"}, None, "engine.reuse.from_phase", "'submit'"),
        (
            {"when_only": ["a"], "from_phase": "train"},
            [*ENGINE["lifecycle"], {"phase": "stop", "process": "aggregator", "expect": "x"}],
            "engine.reuse.from_phase",
            "stop phase",
        ),
        ("yes", None, "engine.reuse", "expected dict"),
    ],
)
def test_reuse_errors_name_the_key(
    reuse: Any, lifecycle: list[Any] | None, key: str, why: str
) -> None:
    doc = {**copy.deepcopy(ENGINE), "reuse": reuse}
    if lifecycle is not None:
        doc["lifecycle"] = lifecycle
    with pytest.raises(SpecError) as err:
        parse_engine(doc, "sweep.yml", "engine")
    assert err.value.key == key and why in str(err.value)


# -- how it is shown ---------------------------------------------------------------------------


def test_the_sinks_say_which_deployment_a_trial_ran_on() -> None:
    outcome = Outcome(
        trial_id="t00001",
        index=1,
        params={"run_config.lr": 0.2},
        repeat=0,
        seed=0,
        status=Status.OK,
        phase=None,
        reason="",
        attempts=1,
        started_at=0.0,
        elapsed_s=2.0,
        durations={"train": 1.5, "eval": 0.5},
        rounds_completed=2,
        round_accuracies=(0.5,),
        aggregator_exit=None,
        parties=(PartyResult(0, None, {"acc": 0.9}),),
        ports=(1, 2),
        deployment="t00000",
    )
    started = SweepStarted("r", "/tmp/r", "s", "flowerish", 2, 2, 1, {"run_config.lr": [0.2]})
    events: list[Event] = [
        started,
        TrialStarted("t00001", outcome.params, 0, 1),
        DeploymentReused("t00001", "t00000"),
        TrialFinished(outcome),
    ]
    plain, lines = io.StringIO(), io.StringIO()
    live = LiveSink(Console(file=io.StringIO(), width=200))
    plain_sink, json_sink = PlainSink(plain), JsonLinesSink(lines)
    for event in events:
        plain_sink.emit(event)
        json_sink.emit(event)
        live.emit(event)
        if isinstance(event, DeploymentReused):
            shown = io.StringIO()
            Console(file=shown, width=200).print(live.render())
            assert "reused t00000's deployment" in shown.getvalue()
    assert "reused t00000's deployment" in plain.getvalue()
    schema = json.loads((resources.files("seel") / "render" / "event_schema.json").read_text())
    docs = [json.loads(line) for line in lines.getvalue().splitlines()]
    for doc in docs:
        jsonschema.validate(doc, schema)
    assert [d["event"] for d in docs] == [
        "sweep_started",
        "trial_started",
        "deployment",
        "trial_finished",
    ]
    assert docs[2]["deployment"] == docs[3]["deployment"] == "t00000"


def test_a_killed_controller_and_ctrl_c_leave_no_deployment(tmp_path: Path) -> None:
    """`seel run` SIGKILLed while a trial runs on another's deployment: the resume stops what it
    left (by the process ledger, where the deployment is under the trial that started it, and by
    the run's mark, for the link's helper); then Ctrl-C while a resumed trial reuses one: exit 130,
    nothing left."""
    sweep = reuse_sweep(tmp_path, {"run_config.lr": {"values": [0.1, 0.2, 0.3, 0.4]}})
    run_dir = tmp_path / "run"
    log = SpawnLog(run_dir)
    with contextlib.closing(Controller(tmp_path, sweep, run_dir)) as first:
        taken = first.events.until("deployment", EVENT_TIMEOUT_S)
        assert taken is not None and taken["deployment"] == "t00000", first.stderr()
        first.proc.kill()
        assert first.finish(60) == -9
    log.snapshot()
    with contextlib.closing(Controller(tmp_path, sweep, run_dir)) as resume:
        taken = resume.events.until("deployment", EVENT_TIMEOUT_S)
        assert taken is not None, resume.stderr()
        resume.proc.send_signal(signal.SIGINT)
        assert resume.finish(60) == 130, resume.stderr()
    log.snapshot()
    kit_nothing_left(log.pairs())
    assert_nothing_left(run_dir)
