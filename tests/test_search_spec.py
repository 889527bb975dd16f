"""The `search:` section: what it accepts, and one clear SpecError for each mistake."""

from __future__ import annotations

from typing import Any

import pytest

from seel.errors import SpecError
from seel.search.spec import EngineFacts, Objective, parse_search

BUILTIN = EngineFacts(
    name="builtin",
    has_round_accuracy=True,
    metrics_keys=("loss", "acc", "f1 micro"),
    phases=("init", "start", "register", "train", "eval", "stop"),
)
NO_ROUNDS = EngineFacts("ibmfl", False, (), BUILTIN.phases)


def parse(raw: Any, engine: EngineFacts = BUILTIN, grid_size: int | None = 100) -> Any:
    return parse_search(raw, "sweep.yml", engine, n_parties=2, grid_size=grid_size)


def test_no_search_is_a_grid() -> None:
    assert parse(None) is None


def test_defaults_and_a_full_section() -> None:
    s = parse({"trials": 10})
    assert (s.sampler, s.trials, s.seed, s.pruner.name) == ("tpe", 10, None, "none")
    assert s.objectives == (Objective("acc", "mean", "maximize"),)
    s = parse(
        {
            "sampler": "random",
            "trials": 60,
            "seed": 7,
            "objective": {"metric": "acc", "parties": "min", "direction": "maximize"},
            "pruner": {"name": "hyperband", "min_rounds": 1},
        }
    )
    assert s.objectives[0].label() == "acc (min over parties)"
    assert s.pruner.name == "hyperband"
    multi = parse(
        {"trials": 5, "objectives": [{"metric": "acc"}, {"metric": "elapsed_s", "direction": "minimize"}]}
    )
    assert multi.directions == ["maximize", "minimize"]
    assert parse({"trials": 5, "objective": {"metric": "loss"}}).directions == ["minimize"]
    assert parse({"trials": 5, "objective": {"metric": "acc", "parties": 1}}).objectives[0].parties == 1


@pytest.mark.parametrize(
    ("raw", "key", "why"),
    [
        ([1], "search", "expected a mapping"),
        ({"trials": 5, "sampeler": "tpe"}, "search.sampeler", "unknown key"),
        ({"trials": 5, "sampler": "bayes"}, "search.sampler", "unknown sampler 'bayes'"),
        ({}, "search.trials", "missing"),
        ({"trials": 0}, "search.trials", ">= 1"),
        ({"trials": "ten"}, "search.trials", ">= 1"),
        ({"trials": 5, "seed": -1}, "search.seed", ">= 0"),
        ({"trials": 500, "sampler": "grid"}, "search.trials", "more than the grid's 100"),
        ({"trials": 5, "objective": {"metric": "acuracy"}}, "search.objective.metric", "prints no metric 'acuracy'"),
        ({"trials": 5, "objective": {"metric": "acc", "parties": 2}}, "search.objective.parties", "no party 2"),
        ({"trials": 5, "objective": {"metric": "acc", "parties": "median"}}, "search.objective.parties", "mean, min, max"),
        ({"trials": 5, "objective": {"metric": "acc", "direction": "up"}}, "search.objective.direction", "maximize or minimize"),
        ({"trials": 5, "objective": {"metric": "elapsed_s", "parties": "min"}}, "search.objective.parties", "column of the trial"),
        ({"trials": 5, "objective": {"metric": "duration.fly_s"}}, "search.objective.metric", "no phase 'fly'"),
        ({"trials": 5, "objective": "acc", "objectives": ["acc"]}, "search.objectives", "not both"),
        ({"trials": 5, "objectives": []}, "search.objectives", "non-empty"),
        ({"trials": 5, "pruner": {"name": "asha"}}, "search.pruner.name", "unknown pruner 'asha'"),
        ({"trials": 5, "pruner": {"name": "median", "min_rounds": 0}}, "search.pruner.min_rounds", ">= 1"),
        ({"trials": 5, "pruner": {"name": "median", "rounds": 2}}, "search.pruner.rounds", "unknown key"),
        ({"trials": 5, "objective": {"metric": "loss"}, "pruner": "median"}, "search.pruner", "must be maximized"),
        ({"trials": 5, "objectives": ["acc", "loss"], "pruner": "median"}, "search.pruner", "single objective"),
    ],
)
def test_each_mistake_is_one_line_naming_the_key(raw: Any, key: str, why: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse(raw)
    assert caught.value.key == key
    assert why in caught.value.why
    assert "\n" not in str(caught.value)


def test_a_pruner_needs_an_engine_with_a_round_line() -> None:
    with pytest.raises(SpecError, match="prints no per-round line") as caught:
        parse({"trials": 5, "pruner": {"name": "hyperband"}}, engine=NO_ROUNDS)
    assert caught.value.key == "search.pruner"
    assert parse({"trials": 5, "pruner": "none"}, engine=NO_ROUNDS).pruner.name == "none"


def test_an_engine_that_declares_no_metrics_accepts_any_metric() -> None:
    assert parse({"trials": 5, "objective": {"metric": "score"}}, engine=NO_ROUNDS).objectives[0].metric == "score"


def test_grid_sampler_needs_a_grid() -> None:
    with pytest.raises(SpecError, match="grid needs a grid"):
        parse({"trials": 5, "sampler": "grid"}, grid_size=None)


def test_repeats_must_be_one() -> None:
    with pytest.raises(SpecError) as caught:
        parse_search({"trials": 5}, "sweep.yml", BUILTIN, n_parties=2, grid_size=10, repeats=2)
    assert caught.value.key == "repeats"
