"""Real Flower deployments (flwr 1.42): a sweep through the `seel` binary, and the faults.

Each fault trial is a whole deployment (a SuperLink, one SuperNode, `flwr run`), so the faults run
side by side as trials of one machine, the way a sweep runs them. After every trial nothing of its
deployment may be left: no process of the trial's sessions, and none carrying the run's mark
(flower-superexec runs in a session of its own).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seel import yamledit
from seel.context import Machine, TrialContext
from seel.events import Event, RoundFinished
from seel.outcome import Outcome, Status
from seel.plan import Plan
from seel.ports import PortAllocator
from seel.procs import ProcessLedger
from seel.proctree import snapshot
from seel.run import RunSettings, prepare
from seel.space import TrialSpec
from seel.trial import Halted, run_trial

pytestmark = [
    pytest.mark.flower,
    pytest.mark.timeout(300),
    pytest.mark.skipif(importlib.util.find_spec("flwr") is None, reason="needs seel[flower]"),
]

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "sweeps" / "flower-app"
SEEL = Path(sys.executable).parent / "seel"
DRILLS = {  # run_config keys of the shipped app, swept per trial here
    "num-server-rounds": 1,
    "fail-at-round": 0,
    "server-fail-at-round": 0,
    "min-nodes": 1,
}


def write_sweep(tmp: Path, nodes: int, timeouts: dict[str, float], extra: str = "") -> Path:
    (tmp / "superlink.yml").write_text(
        "superlink: {port: 9093}\n"
        f"app: {APP}\n"
        f"run_config: {json.dumps(DRILLS)}\n"
        "app_config: {batch-size: 32}\n"
    )
    for i in range(nodes):
        (tmp / f"supernode{i}.yml").write_text(
            "supernode: {port: 9094, superlink_port: 9093}\n"
            f"node_config: {{partition-id: {i}, num-partitions: {nodes}}}\n"
            "fault: {kill_at_round: 0}\n"
        )
    parties = [f"supernode{i}.yml" for i in range(nodes)]
    params = {f"run_config.{k}": {"values": [v]} for k, v in DRILLS.items()}
    params["party[0].fault.kill_at_round"] = {"values": [0]}
    sweep = {
        "name": "flower-test",
        "engine": "flower",
        "configs": {"aggregator": "superlink.yml", "parties": parties},
        "parameters": params,
        "timeouts": timeouts,
    }
    path = tmp / "sweep.yml"
    path.write_text(json.dumps(sweep) + extra)
    return path


def trial(index: int, **drills: int) -> TrialSpec:
    kill = drills.pop("kill_at_round", 0)
    params: dict[str, Any] = {f"run_config.{k}": drills.get(k, v) for k, v in DRILLS.items()}
    params["party[0].fault.kill_at_round"] = kill
    return TrialSpec(f"t{index:05d}", index, params, 0, 0)


def run_mark_holders(run_id: str) -> list[int]:
    """Live processes started with this run's mark, in whatever session they are."""
    mark = f"SEEL_RUN_ID={run_id}".encode()
    found = []
    for pid in snapshot():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if mark in environ.split(b"\0"):
            found.append(pid)
    return found


def ledger_sessions(run: Path) -> set[int]:
    docs = [json.loads(line) for line in (run / "procs.jsonl").read_text().splitlines()]
    return {int(d["pgid"]) for d in docs if d["event"] == "spawn"}


def assert_nothing_left(run: Path, run_id: str, sessions: set[int]) -> None:
    alive = [p for p in snapshot().values() if p.sid in sessions]
    assert alive == [], f"processes left in the trials' sessions: {alive}"
    assert run_mark_holders(run_id) == []


class Batch:
    """Trials of one plan run side by side on one machine."""

    def __init__(self, tmp: Path, plan: Plan, name: str) -> None:
        self.run = tmp / name
        (self.run / "trials").mkdir(parents=True)
        self.run_id = f"flower-test-{name}-{os.getpid()}"
        self.ledger = ProcessLedger(self.run / "procs.jsonl")
        self.machine = Machine(
            plan, self.run, self.run_id, self.ledger, PortAllocator(None, tmp / "ports")
        )
        self.events: list[Event] = []
        self.hooks: list[Callable[[Event], None]] = []
        self.ctx = self.machine.context(self.emit)

    def emit(self, event: Event) -> None:
        self.events.append(event)
        for hook in self.hooks:
            hook(event)

    def spawn_of(self, trial_id: str, name: str) -> dict[str, Any]:
        for line in (self.run / "procs.jsonl").read_text().splitlines():
            doc = json.loads(line)
            if doc["event"] == "spawn" and doc["trial"] == trial_id and doc["name"] == name:
                return dict(doc)
        raise LookupError(name)

    def pid_of(self, trial_id: str, name: str) -> int:
        return int(self.spawn_of(trial_id, name)["pid"])

    def when(self, trial_id: str, name: str, marker: str, founder: str | None = None) -> float:
        """When a process printed `marker`, in seconds since boot: its start (the ledger's clock
        ticks, under the trial that started it) plus the line's stamp in its transcript."""
        spawn = self.spawn_of(founder or trial_id, name)
        return float(
            spawn["ticks"] / os.sysconf("SC_CLK_TCK") + stamp(log(self, trial_id, name), marker)
        )

    async def close(self) -> set[int]:
        sessions = ledger_sessions(self.run)
        await self.machine.aclose()
        return sessions


class TakenPorts:
    """Hands out a port some other program listens on first, for the SuperLink."""

    def __init__(self, inner: PortAllocator, taken: int) -> None:
        self.inner = inner
        self.taken = taken

    def reserve(self, n: int) -> list[int]:
        return [self.taken, *self.inner.reserve(n - 1)]

    def release(self, ports: list[int]) -> None:
        self.inner.release([p for p in ports if p != self.taken])


def log(batch: Batch, trial_id: str, name: str) -> str:
    return (batch.run / "trials" / trial_id / f"{name}.log").read_text(errors="replace")


def stamp(text: str, marker: str) -> float:
    """When a transcript's first line with `marker` came, in seconds after that process started."""
    line = next(ln for ln in text.splitlines() if marker in ln)
    return float(line.split()[0])


def boot_clock() -> float:
    """Seconds since boot, the clock of a process's start time in /proc."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def report(figures: dict[str, float]) -> None:
    """Recovery times (fault to trial end, stop ladder included), kept when SEEL_FLOWER_REPORT
    names a file: the README's figures come from it."""
    path = os.environ.get("SEEL_FLOWER_REPORT")
    if not path:
        return
    kept = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    kept.update({k: round(v, 2) for k, v in figures.items()})
    Path(path).write_text(json.dumps(kept, indent=2))


async def test_flower_sweep_and_faults(tmp_path: Path) -> None:
    """Eight deployments side by side: a `seel run`, and two plans of fault trials (their train
    timeouts differ). Flower's processes mostly wait on its 3 s polling, so together they take
    little more wall time than the longest of them."""
    for name in ("cli", "crashes", "timeouts"):
        (tmp_path / name).mkdir()
    await asyncio.gather(
        cli_sweep(tmp_path / "cli"), crashes(tmp_path / "crashes"), timeouts(tmp_path / "timeouts")
    )


async def crashes(tmp_path: Path) -> None:
    """A ServerApp exception, a SuperNode lost mid-run, a taken port, and a trial pruned after its
    first round: each ends with its status and phase, nothing left behind.

    Reuse: a trial that ends ok leaves its deployment idle; then a trial that differs from it only
    in run_config runs on it (the same SuperLink) and ends ok with its own metrics, while the taken
    port's trial, which differs in a node-level key, must start a fresh one (on the taken port)."""
    plan = prepare(RunSettings(write_sweep(tmp_path, 1, {"init": 120, "train": 240})))
    batch = Batch(tmp_path, plan, "crashes")
    halt: asyncio.Future[Halted] = asyncio.get_running_loop().create_future()
    at: dict[str, float] = {}

    def on_round(event: Event) -> None:
        if not isinstance(event, RoundFinished) or event.round != 1:
            return
        if event.trial_id == "t00002":  # a SuperNode lost between rounds, not by SEEL's hand
            os.killpg(batch.pid_of("t00002", "party0"), signal.SIGKILL)
            at["lost"] = boot_clock()
        if event.trial_id == "t00004" and not halt.done():  # an optimizer prunes it
            halt.set_result(Halted(Status.PRUNED, "pruned after round 1"))
            at["pruned"] = boot_clock()

    async def timed(name: str, ctx: TrialContext, spec: TrialSpec, *args: Any) -> Outcome:
        outcome = await run_trial(ctx, spec, 1, *args)
        at[f"{name}-end"] = boot_clock()
        return outcome

    batch.hooks.append(on_round)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        assert isinstance(batch.ctx.ports, PortAllocator)
        port_ctx: TrialContext = dataclasses.replace(
            batch.ctx,
            ports=TakenPorts(batch.ctx.ports, taken),  # type: ignore[arg-type]
        )

        async def after_ok() -> tuple[Outcome, Outcome, Outcome]:
            ok = await timed("ok", batch.ctx, trial(0))
            # Tasks take their first step in the order they are made: the port trial (a
            # kill_at_round no run reaches: a node-level change, not a fault) looks at the idle
            # deployment first, and must pass it over; the next trial (a fault drill for a round
            # its run does not reach: only run_config differs) then takes it.
            port = asyncio.ensure_future(timed("port", port_ctx, trial(3, kill_at_round=9)))
            reused = asyncio.ensure_future(
                timed("reused", batch.ctx, trial(5, **{"fail-at-round": 2}))
            )
            return ok, await port, await reused

        outcomes: list[Any] = await asyncio.gather(
            after_ok(),
            timed("server", batch.ctx, trial(1, **{"server-fail-at-round": 1})),
            timed("lost", batch.ctx, trial(2, **{"num-server-rounds": 3})),
            timed("pruned", batch.ctx, trial(4, **{"num-server-rounds": 3}), halt),
        )
    sessions = await batch.close()
    (ok, port, reused), server, lost, pruned = outcomes
    outcomes = [ok, reused, server, lost, port, pruned]
    summary = [(o.status, o.phase, o.reason[:120]) for o in outcomes]

    assert [o.status for o in (ok, reused)] == [Status.OK] * 2, summary
    # reuse: the reused trial ran on the ok trial's SuperLink; the port one started its own
    assert (ok.deployment, reused.deployment, port.deployment) == ("t00000", "t00000", "t00003")
    assert reused.ports == ok.ports and "init" not in reused.durations
    with pytest.raises(LookupError):
        batch.spawn_of("t00005", "aggregator")
    assert f"pid {batch.pid_of('t00000', 'aggregator')})" in log(batch, "t00005", "aggregator")
    # its metrics and rounds are its own run's, read after it took the deployment
    assert reused.rounds_completed == 1 and len(reused.round_accuracies) == 1
    assert reused.parties[0].metrics.keys() == {"loss", "acc", "num-examples"}
    assert "SuperNode ID:" not in log(batch, "t00005", "party0")
    assert (server.status, server.phase) == (Status.CRASHED, "train"), summary
    assert "ServerApp raised an exception" in server.reason
    assert (lost.status, lost.phase) == (Status.CRASHED, "train"), summary
    assert "party0" in lost.reason and lost.rounds_completed == 1
    assert (port.status, port.phase, port.retryable) == (Status.FAILED, "init", True), summary
    assert "address already in use" in port.reason
    assert (pruned.status, pruned.phase) == (Status.PRUNED, "train"), summary
    assert pruned.rounds_completed == 1
    # The ladder reached the SuperLink's flower-superexec, in its own session.
    assert "descendant groups" in log(batch, "t00004", "aggregator")
    assert_nothing_left(batch.run, batch.run_id, sessions)
    report(
        {
            # the failing process's marker line to the trial's end
            "serverapp_exception": at["server-end"]
            - batch.when("t00001", "submit", "ServerApp raised an exception"),
            "supernode_lost": at["lost-end"] - at["lost"],
            "taken_port": at["port-end"]
            - batch.when("t00003", "aggregator", "address already in use"),
            "pruned": at["pruned-end"] - at["pruned"],
        }
    )


async def timeouts(tmp_path: Path) -> None:
    """A run waiting for a node that never comes, and a SuperNode killed as round 1 starts (a
    swept fault; Flower waits for its reply): both end at the train timeout."""
    train_timeout = 45.0
    plan = prepare(RunSettings(write_sweep(tmp_path, 1, {"init": 120, "train": train_timeout})))
    batch = Batch(tmp_path, plan, "timeouts")
    hung, killed = await asyncio.gather(
        run_trial(batch.ctx, trial(0, **{"min-nodes": 2}), 1),
        run_trial(batch.ctx, trial(1, kill_at_round=1), 1),
    )
    sessions = await batch.close()
    for outcome in (hung, killed):
        assert (outcome.status, outcome.phase) == (Status.TIMEOUT, "train"), outcome.reason
        assert outcome.durations["train"] == pytest.approx(train_timeout, abs=5.0)
    assert killed.parties[0].exit_code == -signal.SIGKILL
    assert "Waiting for nodes to connect" in log(batch, "t00000", "submit")
    assert_nothing_left(batch.run, batch.run_id, sessions)
    report(  # the phase's timeout to the trial's end: the stop ladder
        {
            "hung_run_after_timeout": hung.elapsed_s - hung.durations["init"] - train_timeout,
            "killed_node_after_timeout": killed.elapsed_s
            - killed.durations["init"]
            - train_timeout,
        }
    )


async def cli_sweep(tmp_path: Path) -> None:
    """`seel run` on two SuperNodes made from one config (`parties.count`): per-round records,
    per-party metrics, an app_config edit that keeps the app's comments, and nothing left when it
    is over. The second trial differs only in run_config: it runs on the first one's deployment,
    where its ClientApp raises (a crash in train, which stops the deployment)."""
    sweep = write_sweep(tmp_path, 1, {"init": 120, "train": 240})
    text = sweep.read_text()
    doc = json.loads(text)
    doc["parameters"]["app_config.batch-size"] = {"values": [16]}
    del doc["parameters"]["run_config.min-nodes"]  # the count sets it
    doc["parameters"]["parties.count"] = {"values": [2]}
    doc["parameters"]["run_config.fail-at-round"] = {"values": [0, 1]}
    doc["parallel"] = 1
    sweep.write_text(json.dumps(doc))
    out = tmp_path / "run"
    seel = await asyncio.create_subprocess_exec(
        str(SEEL),
        "run",
        str(sweep),
        "-o",
        str(out),
        "--json",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SEEL_PORTS_DIR": str(tmp_path / "ports")},
    )
    _, stderr = await seel.communicate()
    assert seel.returncode == 0, stderr.decode()[-2000:]
    record, client = [json.loads(x) for x in (out / "ledger.jsonl").read_text().splitlines()]
    assert record["status"] == "ok", record["reason"]
    assert record["rounds_completed"] == 1 and len(record["round_accuracies"]) == 1
    assert len(record["parties"]) == 2
    for party in record["parties"]:
        assert set(party["metrics"]) == {"loss", "acc", "num-examples"}
    trial_dir = out / "trials" / "t00000"
    nodes = [yamledit.to_plain(yamledit.load_roundtrip(trial_dir / f"config_party{i}.yml"))["node_config"] for i in range(2)]
    assert nodes == [{"partition-id": i, "num-partitions": 2} for i in range(2)]
    assert yamledit.to_plain(yamledit.load_roundtrip(trial_dir / "config_agg.yml"))["run_config"]["min-nodes"] == 2
    # a ClientApp exception, on the deployment the first trial started
    assert (client["status"], client["phase"]) == ("crashed", "train"), client["reason"]
    assert "ClientApp raised an exception" in client["reason"]
    assert (record["deployment"], client["deployment"]) == ("t00000", "t00000")
    spawned = [json.loads(line) for line in (out / "procs.jsonl").read_text().splitlines()]
    assert [d["trial"] for d in spawned if d.get("name") == "aggregator"] == ["t00000"]
    [party0] = [d for d in spawned if d.get("name") == "party0"]
    raised = party0["ticks"] / os.sysconf("SC_CLK_TCK") + stamp(
        (out / "trials" / "t00001" / "party0.log").read_text(errors="replace"),
        "ClientApp raised an exception",
    )
    ended = client["started_at"] + client["elapsed_s"] - (time.time() - boot_clock())
    report({"clientapp_exception": ended - raised})
    rounds_file = out / "trials" / "t00000" / "rounds.jsonl"
    rounds = [json.loads(line) for line in rounds_file.read_text().splitlines()]
    assert rounds[0]["round"] == 1
    assert {"train_loss", "acc", "global_acc"} <= set(rounds[0]["records"])
    copy = out / "trials" / "t00000" / "flower-app-0" / "pyproject.toml"
    edited = copy.read_text()
    assert "batch-size = 16" in edited
    assert "# local learning rate" in edited  # comments kept
    assert (APP / "pyproject.toml").read_text().count("batch-size = 32") == 1
    run_id = json.loads((out / "plan.json").read_text())["run_id"]
    assert run_mark_holders(run_id) == []
    assert_nothing_left(out, run_id, ledger_sessions(out))
