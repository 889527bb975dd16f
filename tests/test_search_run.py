"""Adaptive search end to end on the fake FL processes (tests/children/fakefl.py): the budget with
parallel trials, pruning, SIGKILL and resume, bad `search:` sections, the journal on disk."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from seel.events import SearchProgress
from seel.run import RunSettings, prepare, run_sweep
from seel.search.factory import search_settings, search_source
from seel.search.study import STUDY_FILE, storage
from tests.reliability.kit import (
    Events,
    SpawnLog,
    assert_each_trial_final_once,
    assert_nothing_left,
    processes_mentioning,
)
from tests.test_trial_fake import FAST, ListSink, assert_no_process_left, ledger, write_sweep

SEEL = [sys.executable, "-m", "seel.cli"]
# Three configurations of the fake whose global accuracy after round 1 differs.
ARGS = ["--round-acc 0.2", "--round-acc 0.5", "--round-acc 0.8"]


def search_sweep(tmp_path: Path, search: dict[str, Any], **kw: Any) -> Path:
    parameters = kw.pop("parameters", {"fake.args": {"values": ARGS}})
    path = write_sweep(tmp_path, "builtin", parameters=parameters, **kw)
    doc = json.loads(path.read_text())
    doc["search"] = search
    path.write_text(json.dumps(doc, indent=2))
    return path


async def run_search(tmp_path: Path, sweep: Path, parallel: int = 1) -> tuple[Any, ListSink]:
    sink = ListSink()
    settings = RunSettings(
        sweep=sweep, out=tmp_path / "run", parallel=parallel, ports_dir=tmp_path / "ports"
    )
    plan = prepare(settings)
    search_settings(plan)
    result = await run_sweep(settings, sink, plan, source=search_source(sink.emit))
    return result, sink


def load(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="fake-builtin", storage=storage(run_dir / STUDY_FILE))


async def test_tpe_meets_its_budget_exactly_with_parallel_trials(tmp_path: Path) -> None:
    sweep = search_sweep(
        tmp_path,
        {"sampler": "tpe", "trials": 7, "seed": 1, "objective": {"metric": "final_global_acc"}},
    )
    result, sink = await run_search(tmp_path, sweep, parallel=3)
    records = ledger(result.run_dir)
    assert len(records) == 7 and len({r["trial_id"] for r in records}) == 7
    assert all(r["status"] == "ok" for r in records)
    study = load(result.run_dir)  # the journal opens as any Optuna study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 7
    assert sorted(t.user_attrs["seel_trial_id"] for t in study.trials) == sorted(
        r["trial_id"] for r in records
    )
    assert study.best_value == pytest.approx(0.9)  # --round-acc 0.8, 2 rounds
    progress = sink.of(SearchProgress)
    assert [p.finished for p in progress] == list(range(1, 8))
    assert progress[-1].budget == 7 and progress[-1].best[0]["values"] == [pytest.approx(0.9)]
    assert_no_process_left(result.run_dir, 3 * sum(r["attempts"] for r in records))


def grid_seed_with_first(first: str, values: list[str]) -> int:
    """A seed for which Optuna's grid sampler asks for `first` first."""
    for seed in range(100):
        space = {"fake.args": values}
        study = optuna.create_study(sampler=optuna.samplers.GridSampler(space, seed=seed))
        if study.ask({"fake.args": CategoricalDistribution(values)}).params["fake.args"] == first:
            return seed
    raise AssertionError("no seed found")


async def test_a_trial_whose_rounds_fall_behind_is_pruned_and_its_processes_are_gone(
    tmp_path: Path,
) -> None:
    good, weak = "--round-acc 0.9 --rounds 3", "--round-acc 0.1 --rounds 3 --hang-on ROUND1"
    sweep = search_sweep(
        tmp_path,
        {
            "sampler": "grid",
            "trials": 2,
            "seed": grid_seed_with_first(good, [good, weak]),
            "pruner": {"name": "median", "min_rounds": 1, "startup_trials": 1},
        },
        parameters={"fake.args": {"values": [good, weak]}},
        timeouts={**FAST, "train": 60},  # the weak trial hangs after round 1 until pruned
    )
    result, _ = await run_search(tmp_path, sweep)
    first, second = ledger(result.run_dir)
    assert (first["params"]["fake.args"], first["status"]) == (good, "ok")
    assert (second["params"]["fake.args"], second["status"]) == (weak, "pruned")
    assert second["reason"] == "pruned after round 1" and second["rounds_completed"] == 1
    assert second["durations"]["train"] < 30  # ended by the pruner, not the train timeout
    study = load(result.run_dir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[1].intermediate_values == {1: pytest.approx(0.1)}
    assert_no_process_left(result.run_dir, 3 * (first["attempts"] + second["attempts"]))


def test_a_grid_sweep_has_no_study(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "builtin", parameters={"fake.args": {"values": ARGS[:1]}})
    done = subprocess.run(
        [*SEEL, "run", str(sweep), "--out", str(tmp_path / "run"), "--plain"],
        capture_output=True,
        text=True,
        env={**os.environ, "SEEL_PORTS_DIR": str(tmp_path / "ports")},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in ledger(tmp_path / "run")] == ["ok"]
    assert not (tmp_path / "run" / STUDY_FILE).exists()


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("search.sampler=bayes", "search.sampler: unknown sampler 'bayes'"),
        ("search.objective.metric=acuracy", "search.objective.metric: engine fake-builtin prints no metric 'acuracy'"),
        ("search.trials=0", "search.trials: expected a whole number of trials >= 1"),
    ],
)
def test_a_bad_search_is_one_line_and_exit_2(tmp_path: Path, override: str, says: str) -> None:
    sweep = search_sweep(tmp_path, {"trials": 3, "objective": {"metric": "acc"}})
    done = subprocess.run(
        [*SEEL, "run", str(sweep), override, "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()  # nothing started


def test_a_pruner_on_an_engine_without_a_round_line_is_refused(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "ibmfl", parameters={"fake.args": {"values": ARGS}})
    doc = json.loads(sweep.read_text())
    doc["search"] = {"trials": 3, "pruner": {"name": "hyperband"}}
    sweep.write_text(json.dumps(doc))
    done = subprocess.run(
        [*SEEL, "validate", str(sweep)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "search.pruner: engine fake-ibmfl prints no per-round line with the global accuracy to prune on"
    )


@pytest.fixture
def no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    for pid, _ in processes_mentioning(str(tmp_path)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftovers")
def test_sigkill_mid_search_then_resume_meets_the_budget_with_no_trial_twice(
    tmp_path: Path,
) -> None:
    budget = 8
    sweep = search_sweep(
        tmp_path,
        {"sampler": "tpe", "trials": budget, "seed": 3, "objective": {"metric": "final_global_acc"}},
        parameters={"fake.args": {"values": [f"{a} --rounds 4 --round-s 0.1" for a in ARGS]}},
        timeouts={**FAST, "train": 30},
    )
    run_dir = tmp_path / "run"
    env = {**os.environ, "SEEL_PORTS_DIR": str(tmp_path / "ports")}
    command = [*SEEL, "run", str(sweep), "--out", str(run_dir), "--json", "--parallel", "2"]
    spawns = SpawnLog(run_dir)
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE)
    assert first.stdout is not None
    events = Events(first.stdout)
    try:
        for _ in range(3):
            assert events.until("trial_finished", 60) is not None
        assert events.until("trial_started", 60) is not None  # and two are running
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stdout.close()
    killed_with = spawns.snapshot()
    before = {r["trial_id"] for r in ledger(run_dir)}
    lost = {
        t.user_attrs["seel_trial_id"]
        for t in load(run_dir).trials
        if t.state == TrialState.RUNNING and "seel_trial_id" in t.user_attrs
    }
    assert 3 <= len(before) < budget and lost

    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=240, check=False)
    assert resumed.returncode == 0, resumed.stderr
    docs = [json.loads(line) for line in resumed.stdout.splitlines()]
    started = next(d for d in docs if d["event"] == "sweep_started")
    assert (started["trial_count"], started["pending"]) == (budget, budget - len(before))

    records = ledger(run_dir)
    finals = assert_each_trial_final_once(run_dir, {r["trial_id"] for r in records})
    assert len(finals) == budget  # exactly the budget, no trial recorded twice
    assert before <= set(finals) and not lost & set(finals)  # the lost runs were asked again
    study = load(run_dir)
    states = Counter(t.state for t in study.trials)
    assert states[TrialState.COMPLETE] == budget and states[TrialState.FAIL] == len(lost)
    retried = {t.user_attrs.get("seel_retry_of") for t in study.trials}
    assert lost <= retried
    spawns.snapshot()
    assert_nothing_left(killed_with)
    assert_nothing_left(spawns.pairs())


SHIPPED = Path(__file__).resolve().parents[1] / "sweeps" / "search-tpe.yml"


def test_the_shipped_search_runs_and_reports_its_best_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib import resources

    import jsonschema
    from typer.testing import CliRunner

    from seel.cli import app

    out = tmp_path / "run"
    monkeypatch.setenv("SEEL_PORTS_DIR", str(tmp_path / "ports"))
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(SHIPPED), "search.trials=6", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    schema = json.loads((resources.files("seel") / "render" / "event_schema.json").read_text())
    events = [json.loads(line) for line in result.stdout.splitlines()]
    for event in events:
        jsonschema.validate(event, schema)
    started = events[0]
    assert (started["event"], started["trial_count"], started["budget"]) == ("sweep_started", 6, True)
    progress = [e for e in events if e["event"] == "search_progress"]
    assert [p["finished"] for p in progress] == [1, 2, 3, 4, 5, 6]
    assert progress[-1]["objectives"] == [{"name": "acc (min over parties)", "direction": "maximize"}]
    [best] = progress[-1]["best"]
    assert 0 < best["values"][0] <= 1 and set(best["params"]) == set(started["parameters"])

    report = runner.invoke(app, ["report", str(out), "--json"])
    assert report.exit_code == 0, report.output
    doc = json.loads(report.stdout)
    assert doc["effects"] == [] and doc["search"]["best"][0]["trial"] == best["trial"]
    assert [row["trial"] for row in doc["search"]["history"]] == [f"t{i:05d}" for i in range(6)]
    assert doc["search"]["importance_method"] == "fanova"
    shown = runner.invoke(app, ["report", str(out)])
    assert shown.exit_code == 0 and "Best trial" in shown.output
    plots = runner.invoke(app, ["plot", str(out)])
    assert plots.exit_code == 0, plots.output
    assert all(Path(line).is_file() for line in plots.stdout.splitlines())
    assert (out / "plots" / "search-history.png").is_file()
