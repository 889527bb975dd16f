"""OptunaSource on its own: budget, pruning, resume against the ledger, the journal on disk."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from seel.outcome import Outcome, PartyResult, Status
from seel.search import STUDY_FILE
from seel.search.source import OptunaSource, objective_value
from seel.search.spec import Objective, PrunerSettings, SearchSettings
from seel.space import TrialSpec

DISTRIBUTIONS = {
    "lr": FloatDistribution(0.001, 1.0, log=True),
    "epochs": IntDistribution(1, 5),
    "model": CategoricalDistribution(["small", "large"]),
}


def settings(trials: int = 8, pruner: str = "none", sampler: str = "tpe") -> SearchSettings:
    return SearchSettings(
        sampler=sampler,
        trials=trials,
        seed=3,
        objectives=(Objective("acc", "mean", "maximize"),),
        pruner=PrunerSettings(pruner, min_rounds=1, startup_trials=1),
    )


def make_trial(trial_id: str, index: int, params: dict[str, Any]) -> TrialSpec:
    return TrialSpec(trial_id=trial_id, index=index, params=params, repeat=0, seed=0)


def source(tmp_path: Path, ledger: list[dict[str, Any]] = (), **kw: Any) -> OptunaSource:  # type: ignore[assignment]
    return OptunaSource(
        study_path=tmp_path / STUDY_FILE,
        study_name="s",
        settings=settings(**kw),
        distributions=DISTRIBUTIONS,
        grid=None,
        make_trial=make_trial,
        ledger=list(ledger),
    )


def outcome(trial: TrialSpec, status: Status = Status.OK, acc: float = 0.5) -> Outcome:
    return Outcome(
        trial_id=trial.trial_id,
        index=trial.index,
        params=trial.params,
        repeat=0,
        seed=0,
        status=status,
        phase=None if status is Status.OK else "train",
        reason="",
        attempts=1,
        started_at=0.0,
        elapsed_s=1.0,
        durations={},
        rounds_completed=2,
        round_accuracies=(acc - 0.1, acc),
        aggregator_exit=0,
        parties=(PartyResult(0, 0, {"acc": acc}), PartyResult(1, 0, {"acc": acc - 0.2})),
        ports=(),
    )


def run_to_budget(src: OptunaSource, parallel: int, seed: int = 0) -> list[Outcome]:
    rng = random.Random(seed)
    running: list[TrialSpec] = []
    told: list[Outcome] = []
    while True:
        while len(running) < parallel and (trial := src.next_trial()) is not None:
            running.append(trial)
        if not running:
            return told
        trial = running.pop(rng.randrange(len(running)))
        status = rng.choice([Status.OK, Status.OK, Status.CRASHED, Status.TIMEOUT])
        told.append(outcome(trial, status, acc=rng.random()))
        src.tell(told[-1])


def test_budget_is_met_exactly_with_parallel_trials(tmp_path: Path) -> None:
    src = source(tmp_path, trials=9)
    told = run_to_budget(src, parallel=4)
    assert len(told) == 9
    assert len({o.trial_id for o in told}) == 9
    assert src.finished()
    assert src.next_trial() is None


def test_objective_reduces_parties() -> None:
    trial = make_trial("t00000", 0, {})
    done = outcome(trial, acc=0.9)
    assert objective_value(Objective("acc", "mean", "maximize"), done) == pytest.approx(0.8)
    assert objective_value(Objective("acc", "min", "maximize"), done) == pytest.approx(0.7)
    assert objective_value(Objective("acc", 1, "maximize"), done) == pytest.approx(0.7)
    assert objective_value(Objective("final_global_acc", "mean", "maximize"), done) == 0.9
    assert objective_value(Objective("f1", "mean", "maximize"), done) is None


def test_a_trial_that_falls_behind_is_pruned(tmp_path: Path) -> None:
    src = source(tmp_path, trials=4, pruner="median")
    good = src.next_trial()
    assert good is not None
    for step in (1, 2):
        assert not src.observe(good.trial_id, step, 0.9)
    src.tell(outcome(good, acc=0.9))
    weak = src.next_trial()
    assert weak is not None
    assert src.observe(weak.trial_id, 1, 0.1)
    src.tell(outcome(weak, Status.PRUNED, acc=0.1))
    trials = src.study.get_trials()
    assert [t.state for t in trials] == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
    ]
    assert src.progress().pruned == 1


def test_resume_fails_running_trials_asks_them_again_and_meets_the_budget(tmp_path: Path) -> None:
    first = source(tmp_path, trials=6)
    a, b, c = first.next_trial(), first.next_trial(), first.next_trial()
    assert a and b and c
    done = outcome(a, acc=0.7)
    first.tell(done)
    ledger = [done.to_json()]
    del first  # the controller dies with b and c running

    second = source(tmp_path, ledger, trials=6)
    states = {t.user_attrs.get("seel_trial_id"): t.state for t in second.study.get_trials()}
    assert states["t00001"] == optuna.trial.TrialState.FAIL
    again = [second.next_trial(), second.next_trial()]
    assert [t.params if t else None for t in again] == [b.params, c.params]
    assert {t.trial_id for t in again if t} == {"t00003", "t00004"}
    for t in again:
        assert t
        second.tell(outcome(t))
        ledger.append(outcome(t).to_json())
    rest = run_to_budget(second, parallel=2)
    ids = [doc["trial_id"] for doc in ledger] + [o.trial_id for o in rest]
    assert len(ids) == 6 == len(set(ids))
    assert second.finished()

    third = source(tmp_path, ledger + [o.to_json() for o in rest], trials=6)
    assert third.finished() and third.next_trial() is None


def test_the_journal_opens_with_optuna(tmp_path: Path) -> None:
    src = source(tmp_path, trials=3)
    run_to_budget(src, parallel=2)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / STUDY_FILE)))
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.trials) == 3
    assert {t.user_attrs["seel_trial_id"] for t in study.trials} == {"t00000", "t00001", "t00002"}


def test_a_retried_attempt_reports_its_rounds_once(tmp_path: Path) -> None:
    src = source(tmp_path, trials=2, pruner="median")
    trial = src.next_trial()
    assert trial is not None
    assert not src.observe(trial.trial_id, 1, 0.5)
    assert not src.observe(trial.trial_id, 1, 0.6)  # attempt 2 of the same trial
    assert src.study.trials[0].intermediate_values == {1: 0.5}


def test_several_objectives_give_a_pareto_front(tmp_path: Path) -> None:
    two = SearchSettings(
        sampler="tpe",
        trials=6,
        seed=0,
        objectives=(Objective("acc", "min", "maximize"), Objective("elapsed_s", "mean", "minimize")),
        pruner=PrunerSettings("none"),
    )
    src = OptunaSource(
        study_path=tmp_path / STUDY_FILE,
        study_name="mo",
        settings=two,
        distributions=DISTRIBUTIONS,
        grid=None,
        make_trial=make_trial,
    )
    for acc, elapsed in [(0.9, 5.0), (0.8, 1.0), (0.7, 2.0)]:
        trial = src.next_trial()
        assert trial is not None
        src.tell(dataclasses.replace(outcome(trial, acc=acc + 0.2), elapsed_s=elapsed))
    front = src.progress().best
    assert [b["values"] for b in front] == [[pytest.approx(0.9), 5.0], [pytest.approx(0.8), 1.0]]


def test_an_interrupted_trial_is_asked_again_on_resume_and_only_once(tmp_path: Path) -> None:
    first = source(tmp_path, trials=3)
    a, b = first.next_trial(), first.next_trial()
    assert a and b
    done, stopped = outcome(a), outcome(b, Status.INTERRUPTED)
    first.tell(done)
    first.tell(stopped)  # Ctrl-C: recorded as interrupted, not finished
    ledger = [done.to_json(), stopped.to_json()]
    assert not first.finished()

    second = source(tmp_path, ledger, trials=3)
    again = second.next_trial()
    assert again is not None and again.params == b.params and again.trial_id == "t00002"
    del second  # killed again before it finished: the retry is asked, then lost

    third = source(tmp_path, ledger, trials=3)
    retries = [t for t in third.study.trials if t.user_attrs.get("seel_retry_of") == b.trial_id]
    assert len(retries) == 1  # t00002 is failed and asked again under its own id, not b's twice
    last = third.next_trial()
    assert last is not None and last.params == b.params
    third.tell(outcome(last))
    assert third.finished_count == 2 and not third.finished()
