"""Tests for seel.sweep: sweep files, value expansion, overrides, validation and trial order."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seel.errors import SpecError
from seel.grammar import parse_scalar
from seel.grid import iter_trials, trial_at
from seel.space import Target, parse_target
from seel.sweep import SweepSpec, load_sweep

AGGREGATOR = """\
connection:
  port: 5000                     # rewritten per trial
model:
  name: logistic
hyperparams:
  global:
    rounds: 4
    max_timeout: 60
    termination_accuracy: 0.99
    early_stop: false
    note: null
  local:
    training:
      epochs: 2
    optimizer:
      lr: 0.5
"""

PARTY0 = """\
data:
  info:
    alpha: 0.5
    party_index: 0
simulation:
  delay_s: 0.0
hyperparams:
  local:
    training:
      epochs: 1
"""

PARTY1 = """\
data:
  info:
    alpha: 0.5
    party_index: 1
hyperparams:
  local:
    training:
      epochs: 1
"""

HEADER = """\
configs:
  aggregator: configs/agg.yml
  parties:
    - configs/party0.yml
    - configs/party1.yml
"""

Writer = Callable[..., Path]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "agg.yml").write_text(AGGREGATOR, encoding="utf-8")
    (configs / "party0.yml").write_text(PARTY0, encoding="utf-8")
    (configs / "party1.yml").write_text(PARTY1, encoding="utf-8")
    return tmp_path


@pytest.fixture
def write(project: Path) -> Writer:
    """Write a sweep file into the project; by default with the standard configs header."""

    def _write(body: str, *, header: str = HEADER, name: str = "sweep.yml") -> Path:
        path = project / name
        path.write_text(header + body, encoding="utf-8")
        return path

    return _write


def params(body: str) -> str:
    """A ``parameters:`` block from lines written without indentation."""
    lines = "".join(f"  {line}\n" for line in body.strip().splitlines())
    return "parameters:\n" + lines


def values_of(spec: SweepSpec, name: str) -> tuple[Any, ...]:
    return next(p.values for p in spec.parameters if p.name == name)


def spec_error(path: Path, overrides: tuple[str, ...] = ()) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_sweep(path, overrides)
    return info.value


def assert_names(error: SpecError, file: object, key: str, why: str) -> None:
    assert error.file == str(file)
    assert error.key == key
    assert why in error.why
    assert str(file) in str(error)
    assert key in str(error)


# ---------------------------------------------------------------------------------------------
# Loading and expansion


def test_minimal_sweep_defaults(write: Writer, project: Path) -> None:
    path = write("")
    spec = load_sweep(path)
    assert spec.path == path
    assert spec.name == "sweep"
    assert spec.description == ""
    assert spec.engine == "builtin"
    assert spec.aggregator_config == project / "configs" / "agg.yml"
    assert spec.party_configs == (
        project / "configs" / "party0.yml",
        project / "configs" / "party1.yml",
    )
    assert spec.aggregator_config.is_absolute()
    assert spec.parameters == ()
    assert spec.fixed == ()
    assert (spec.repeats, spec.seed, spec.parallel, spec.port_range) == (1, 0, None, None)
    assert spec.timeouts == {}
    assert spec.trial_count() == 1
    trials = list(iter_trials(spec))
    assert len(trials) == 1
    assert trials[0].params == {}
    assert trials[0].trial_id == "t00000"


def test_full_settings(write: Writer) -> None:
    body = """\
name: paper-table1
description: the first table
engine: {steps: [], note: custom}
repeats: 3
seed: 7
timeouts: {init: 30, train: 600.5}
parallel: 2
port_range: 6000-6999
"""
    spec = load_sweep(write(body))
    assert spec.name == "paper-table1"
    assert spec.description == "the first table"
    assert spec.engine == {"steps": [], "note": "custom"}
    assert type(spec.engine) is dict
    assert (spec.repeats, spec.seed, spec.parallel) == (3, 7, 2)
    assert spec.timeouts == {"init": 30.0, "train": 600.5}
    assert spec.port_range == (6000, 6999)
    assert spec.trial_count() == 3


def test_decimal_exact_float_range(write: Writer) -> None:
    spec = load_sweep(
        write(params("hyperparams.global.termination_accuracy: {min: 0.95, max: 0.99, step: 0.01}"))
    )
    values = values_of(spec, "hyperparams.global.termination_accuracy")
    assert values == (float("0.95"), float("0.96"), float("0.97"), float("0.98"), float("0.99"))
    assert all(type(v) is float for v in values)
    assert [repr(v) for v in values] == ["0.95", "0.96", "0.97", "0.98", "0.99"]


def test_paper_table_two(write: Writer) -> None:
    body = params(
        """
hyperparams.global.max_timeout: {min: 0, max: 200, step: 2}
hyperparams.global.termination_accuracy: {min: 0.950, max: 0.999, step: 0.001}
"""
    )
    spec = load_sweep(write(body))
    timeouts = values_of(spec, "hyperparams.global.max_timeout")
    accuracies = values_of(spec, "hyperparams.global.termination_accuracy")
    assert timeouts == tuple(range(0, 201, 2))
    assert all(type(v) is int for v in timeouts)
    assert len(accuracies) == 50
    assert accuracies == tuple(float(f"0.{950 + i}") for i in range(50))
    assert accuracies[-1] == 0.999
    assert spec.trial_count() == 5050


def test_int_and_mixed_ranges(write: Writer) -> None:
    body = params(
        """
hyperparams.global.rounds: {min: 2, max: 4, step: 1}
hyperparams.global.max_timeout: {min: 0, max: 10, step: 3}
hyperparams.global.termination_accuracy: {min: 0, max: 1, step: 0.25}
hyperparams.local.optimizer.lr: {min: 0.5, max: 0.5, step: 1}
"""
    )
    spec = load_sweep(write(body))
    rounds = values_of(spec, "hyperparams.global.rounds")
    assert rounds == (2, 3, 4)
    assert all(type(v) is int for v in rounds)
    assert values_of(spec, "hyperparams.global.max_timeout") == (0, 3, 6, 9)
    quarters = values_of(spec, "hyperparams.global.termination_accuracy")
    assert quarters == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert all(type(v) is float for v in quarters)
    assert values_of(spec, "hyperparams.local.optimizer.lr") == (0.5,)


def test_listed_values_keep_order_and_types(write: Writer) -> None:
    body = params(
        """
model.name: {values: [mlp, logistic, "123"]}
hyperparams.global.note: {values: [1, 0.5, true, null, text]}
"""
    )
    spec = load_sweep(write(body))
    assert values_of(spec, "model.name") == ("mlp", "logistic", "123")
    notes = values_of(spec, "hyperparams.global.note")
    assert notes == (1, 0.5, True, None, "text")
    assert [type(v) for v in notes] == [int, float, bool, type(None), str]


def test_random_draws(write: Writer) -> None:
    body = params(
        """
hyperparams.local.optimizer.lr: {random: loguniform, low: 0.001, high: 1.0, count: 40, seed: 3}
hyperparams.global.termination_accuracy: {random: uniform, low: 0.9, high: 0.99, count: 5, seed: 1}
hyperparams.global.rounds: {random: int, low: 1, high: 2, count: 64, seed: 0}
"""
    )
    path = write(body)
    spec = load_sweep(path)
    lrs = values_of(spec, "hyperparams.local.optimizer.lr")
    assert len(lrs) == 40
    assert all(type(v) is float and 0.001 <= v <= 1.0 for v in lrs)
    assert any(v < 0.01 for v in lrs) and any(v > 0.1 for v in lrs)
    accuracies = values_of(spec, "hyperparams.global.termination_accuracy")
    assert len(accuracies) == 5
    assert all(0.9 <= v <= 0.99 for v in accuracies)
    assert len(set(accuracies)) == 5
    rounds = values_of(spec, "hyperparams.global.rounds")
    assert set(rounds) == {1, 2}
    assert all(type(v) is int for v in rounds)
    assert load_sweep(path) == spec

    reseeded = load_sweep(write(body.replace("seed: 3", "seed: 4"), name="other.yml"))
    assert values_of(reseeded, "hyperparams.local.optimizer.lr") != lrs


# ---------------------------------------------------------------------------------------------
# Value-spec errors


VALUE_SPEC_ERRORS = [
    ("{min: 0, max: 4, step: 1, stride: 2}", ".stride", "unknown field"),
    ("{min: 0, max: 4, step: 0}", ".step", "step must be > 0"),
    ("{min: 0, max: 4, step: -1}", ".step", "step must be > 0"),
    ("{min: 4, max: 0, step: 1}", "", "empty range: min > max"),
    ("{min: a, max: 4, step: 1}", ".min", "must be a number"),
    ("{min: true, max: 4, step: 1}", ".min", "must be a number"),
    ("{min: 0, max: 4}", ".step", "missing"),
    ("{values: []}", ".values", "empty"),
    ("{values: [1, [2]]}", ".values", "scalar"),
    ("{values: [{a: 1}]}", ".values", "scalar"),
    ("{values: 3}", ".values", "must be a list"),
    ("{values: [1], min: 0}", "", "mixes"),
    ("{}", "", "expected"),
    ("[1, 2]", "", "expected a mapping"),
    ("3", "", "expected a mapping"),
    ("{random: normal, low: 0, high: 1, count: 2, seed: 0}", ".random", "must be one of"),
    ("{random: int, low: 3, high: 3, count: 2, seed: 0}", "", "low must be < high"),
    ("{random: int, low: 0.5, high: 3, count: 2, seed: 0}", ".low", "integer"),
    ("{random: loguniform, low: 0, high: 1, count: 2, seed: 0}", ".low", "> 0"),
    ("{random: uniform, low: 0, high: 1, count: 0, seed: 0}", ".count", ">= 1"),
    ("{random: uniform, low: 0, high: 1, count: 2}", ".seed", "missing"),
    ("{low: 0, high: 1, count: 2, seed: 0}", ".random", "missing"),
]


@pytest.mark.parametrize(("spec_text", "suffix", "why"), VALUE_SPEC_ERRORS)
def test_value_spec_errors(write: Writer, spec_text: str, suffix: str, why: str) -> None:
    path = write(params(f"hyperparams.global.note: {spec_text}"))
    assert_names(spec_error(path), path, "parameters.hyperparams.global.note" + suffix, why)


def test_huge_range_is_refused(write: Writer) -> None:
    path = write(params("hyperparams.global.rounds: {min: 0, max: 1000000000000, step: 1}"))
    assert_names(spec_error(path), path, "parameters.hyperparams.global.rounds", "at most")


# ---------------------------------------------------------------------------------------------
# Structural validation


def test_unknown_top_level_key(write: Writer) -> None:
    path = write("repeat: 2\n")
    assert_names(spec_error(path), path, "repeat", "unknown key")


def test_missing_aggregator(write: Writer) -> None:
    path = write("", header="configs:\n  parties: [configs/party0.yml]\n")
    assert_names(spec_error(path), path, "configs.aggregator", "missing")


@pytest.mark.parametrize("parties", ["[]", "null"])
def test_empty_parties(write: Writer, parties: str) -> None:
    path = write("", header=f"configs:\n  aggregator: configs/agg.yml\n  parties: {parties}\n")
    assert_names(spec_error(path), path, "configs.parties", "at least one")


def test_missing_configs_section(write: Writer) -> None:
    path = write("name: x\n", header="")
    assert_names(spec_error(path), path, "configs", "missing")


def test_unknown_configs_key(write: Writer) -> None:
    path = write("", header=HEADER + "  server: configs/agg.yml\n")
    assert_names(spec_error(path), path, "configs.server", "unknown key")


def test_missing_config_file_names_the_sweep_key_and_the_config(write: Writer, project: Path) -> None:
    path = write("", header=HEADER.replace("party1.yml", "party9.yml"))
    error = spec_error(path)
    assert (error.file, error.key) == (str(path), "configs.parties[1]")
    assert error.why == f"{project / 'configs' / 'party9.yml'}: file not found"


def test_malformed_config_names_the_config(write: Writer, project: Path) -> None:
    (project / "configs" / "agg.yml").write_text("a: [1,\n", encoding="utf-8")
    error = spec_error(write(""))
    assert error.file == str(project / "configs" / "agg.yml")
    assert error.why.startswith("malformed YAML at line")


def test_malformed_sweep_file(write: Writer) -> None:
    path = write("parameters: {a: [\n")
    error = spec_error(path)
    assert error.file == str(path)
    assert error.why.startswith("malformed YAML at line")


def test_missing_sweep_file(project: Path) -> None:
    error = spec_error(project / "nope.yml")
    assert error.file == str(project / "nope.yml")
    assert error.why == "file not found"


def test_missing_key_in_aggregator(write: Writer, project: Path) -> None:
    path = write(params("hyperparams.global.patience: {values: [1]}"))
    assert_names(
        spec_error(path),
        path,
        "parameters.hyperparams.global.patience",
        f"no such key in {project / 'configs' / 'agg.yml'}",
    )


def test_party_prefix_checks_every_party(write: Writer, project: Path) -> None:
    path = write(params("party.simulation.delay_s: {values: [0, 0.5]}"))
    assert_names(
        spec_error(path),
        path,
        "parameters.party.simulation.delay_s",
        f"no such key in {project / 'configs' / 'party1.yml'}",
    )
    spec = load_sweep(write(params("party[0].simulation.delay_s: {values: [0, 0.5]}")))
    assert spec.parameters[0].target == Target("party", 0, "simulation.delay_s")


def test_party_index_out_of_range(write: Writer) -> None:
    path = write(params("party[2].data.info.alpha: {values: [1.0]}"))
    assert_names(spec_error(path), path, "parameters.party[2].data.info.alpha", "out of range")


def test_party_targets(write: Writer) -> None:
    body = params(
        """
party.data.info.alpha: {values: [0.1, 1]}
party[1].hyperparams.local.training.epochs: {values: [1, 2]}
hyperparams.local.training.epochs: {values: [3]}
"""
    )
    spec = load_sweep(write(body))
    assert [p.target for p in spec.parameters] == [
        Target("party", None, "data.info.alpha"),
        Target("party", 1, "hyperparams.local.training.epochs"),
        Target("aggregator", None, "hyperparams.local.training.epochs"),
    ]


def test_overlapping_targets_are_refused(write: Writer) -> None:
    body = params(
        """
party.data.info.alpha: {values: [0.1, 1]}
party[0].data.info.alpha: {values: [0.2]}
"""
    )
    path = write(body)
    assert_names(
        spec_error(path), path, "parameters.party[0].data.info.alpha", "parameters.party.data"
    )


@pytest.mark.parametrize(
    ("name", "n_parties", "expected"),
    [
        ("a.b", 2, Target("aggregator", None, "a.b")),
        ("party.a.b", 2, Target("party", None, "a.b")),
        ("party[0].a", 2, Target("party", 0, "a")),
        ("party[1].a.b", 2, Target("party", 1, "a.b")),
        ("partyish.a", 2, Target("aggregator", None, "partyish.a")),
    ],
)
def test_parse_target(name: str, n_parties: int, expected: Target) -> None:
    assert parse_target(name, n_parties) == expected


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("party[2].a", "out of range"),
        ("party[-1].a", "not a non-negative integer"),
        ("party[x].a", "not a non-negative integer"),
        ("party[1]", "expected party"),
        ("party", "expected party"),
        ("party.", "empty part"),
        ("a..b", "empty part"),
        ("party[0].a..b", "empty part"),
    ],
)
def test_parse_target_errors(name: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_target(name, 2)


SETTING_ERRORS = [
    ("repeats: 0\n", "repeats", ">= 1"),
    ("repeats: 1.5\n", "repeats", "integer"),
    ("repeats: true\n", "repeats", "integer"),
    ("seed: -1\n", "seed", ">= 0"),
    ("parallel: 0\n", "parallel", ">= 1"),
    ("port_range: 80-90\n", "port_range", "1024"),
    ("port_range: 7000-6000\n", "port_range", "A <= B"),
    ("port_range: 6000-70000\n", "port_range", "65535"),
    ("port_range: six\n", "port_range", "A-B"),
    ("timeouts: {boot: 3}\n", "timeouts.boot", "unknown phase"),
    ("timeouts: {train: 0}\n", "timeouts.train", "> 0"),
    ("timeouts: {train: -1}\n", "timeouts.train", "> 0"),
    ("timeouts: 5\n", "timeouts", "mapping"),
    ("engine: 3\n", "engine", "engine"),
    ("name: ''\n", "name", "non-empty"),
    ("parameters: [a]\n", "parameters", "mapping"),
]


@pytest.mark.parametrize(("body", "key", "why"), SETTING_ERRORS)
def test_setting_errors(write: Writer, body: str, key: str, why: str) -> None:
    path = write(body)
    assert_names(spec_error(path), path, key, why)


# ---------------------------------------------------------------------------------------------
# Type checks against the base configs


TYPE_CASES = [
    ("hyperparams.global.rounds", "[3]", True),
    ("hyperparams.global.rounds", "[0.5]", False),
    ("hyperparams.global.rounds", "[3.0]", False),
    ("hyperparams.global.rounds", "[true]", False),
    ("hyperparams.global.rounds", "['3']", False),
    ("hyperparams.global.rounds", "[null]", False),
    ("hyperparams.global.early_stop", "[true, false]", True),
    ("hyperparams.global.early_stop", "[1]", False),
    ("hyperparams.global.early_stop", "[0]", False),
    ("hyperparams.global.termination_accuracy", "[1, 0.5]", True),
    ("hyperparams.global.termination_accuracy", "[true]", False),
    ("hyperparams.global.termination_accuracy", "['0.5']", False),
    ("model.name", "[mlp]", True),
    ("model.name", "[1]", False),
    ("model.name", "[false]", False),
    ("hyperparams.global.note", "[1, 0.5, true, x, null]", True),
    ("hyperparams.global", "[1]", False),
]


@pytest.mark.parametrize(("key", "values", "ok"), TYPE_CASES)
def test_type_checks(write: Writer, project: Path, key: str, values: str, ok: bool) -> None:
    path = write(params(f"{key}: {{values: {values}}}"))
    if ok:
        assert load_sweep(path).parameters[0].target.path == key
    else:
        error = spec_error(path)
        assert_names(error, path, f"parameters.{key}", str(project / "configs" / "agg.yml"))


def test_type_check_applies_to_every_party(write: Writer, project: Path) -> None:
    (project / "configs" / "party1.yml").write_text(
        PARTY1.replace("alpha: 0.5", "alpha: label-skew"), encoding="utf-8"
    )
    path = write(params("party.data.info.alpha: {values: [0.1]}"))
    error = spec_error(path)
    assert_names(error, path, "parameters.party.data.info.alpha", "a string")
    assert str(project / "configs" / "party1.yml") in error.why


def test_random_floats_into_int_field_are_refused(write: Writer) -> None:
    path = write(
        params("hyperparams.global.rounds: {random: uniform, low: 1, high: 5, count: 2, seed: 0}")
    )
    assert_names(spec_error(path), path, "parameters.hyperparams.global.rounds", "a float")


# ---------------------------------------------------------------------------------------------
# Overrides


BASE_PARAMS = params(
    """
hyperparams.global.rounds: {values: [2, 3]}
hyperparams.global.max_timeout: {values: [10, 20]}
"""
)


def test_override_comma_list_replaces_in_place(write: Writer) -> None:
    spec = load_sweep(write(BASE_PARAMS), ["hyperparams.global.rounds=5,6,7"])
    assert [p.name for p in spec.parameters] == [
        "hyperparams.global.rounds",
        "hyperparams.global.max_timeout",
    ]
    assert values_of(spec, "hyperparams.global.rounds") == (5, 6, 7)
    assert spec.trial_count() == 6


def test_override_adds_parameter_at_end(write: Writer) -> None:
    spec = load_sweep(
        write(BASE_PARAMS), ["model.name=mlp,logistic", "party[1].data.info.alpha=0.1,1"]
    )
    assert [p.name for p in spec.parameters][-2:] == ["model.name", "party[1].data.info.alpha"]
    assert values_of(spec, "model.name") == ("mlp", "logistic")
    assert values_of(spec, "party[1].data.info.alpha") == (0.1, 1)
    assert spec.parameters[-1].target == Target("party", 1, "data.info.alpha")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("range(1,4)", (1, 2, 3)),
        ("range(0,10,3)", (0, 3, 6, 9)),
        ("range(0, 9, 3)", (0, 3, 6)),
        ("range(10,0,-3)", (10, 7, 4, 1)),
        ("range(0.95,1.0,0.01)", (0.95, 0.96, 0.97, 0.98, 0.99)),
        ("range(0,1,0.25)", (0.0, 0.25, 0.5, 0.75)),
    ],
)
def test_override_range(write: Writer, text: str, expected: tuple[Any, ...]) -> None:
    spec = load_sweep(write(""), [f"hyperparams.global.termination_accuracy={text}"])
    values = values_of(spec, "hyperparams.global.termination_accuracy")
    assert values == expected
    assert [type(v) for v in values] == [type(v) for v in expected]


def test_override_range_ints_stay_ints(write: Writer) -> None:
    spec = load_sweep(write(""), ["hyperparams.global.rounds=range(1,4)"])
    rounds = values_of(spec, "hyperparams.global.rounds")
    assert rounds == (1, 2, 3)
    assert all(type(v) is int for v in rounds)


def test_override_single_value_is_fixed(write: Writer) -> None:
    spec = load_sweep(
        write(BASE_PARAMS), ["hyperparams.global.rounds=9", "party.data.info.alpha=0.25"]
    )
    assert [p.name for p in spec.parameters] == ["hyperparams.global.max_timeout"]
    assert spec.fixed == (
        ("hyperparams.global.rounds", Target("aggregator", None, "hyperparams.global.rounds"), 9),
        ("party.data.info.alpha", Target("party", None, "data.info.alpha"), 0.25),
    )
    assert spec.trial_count() == 2
    assert all("hyperparams.global.rounds" not in t.params for t in iter_trials(spec))


def test_override_top_level_settings(write: Writer) -> None:
    spec = load_sweep(
        write("repeats: 2\n"),
        ["repeats=3", "seed=11", "parallel=4", "port_range=7000-7099"],
    )
    assert (spec.repeats, spec.seed, spec.parallel, spec.port_range) == (3, 11, 4, (7000, 7099))
    assert spec.trial_count() == 3


def test_override_quoted_comma_is_one_value(write: Writer) -> None:
    spec = load_sweep(write(""), ["model.name='a,b'"])
    assert spec.fixed[0][2] == "a,b"
    spec = load_sweep(write(""), ['model.name="x,y",plain'])
    assert values_of(spec, "model.name") == ("x,y", "plain")


OVERRIDE_ERRORS = [
    ("rounds", "rounds", "expected KEY=VALUE"),
    ("=3", "=3", "expected KEY=VALUE"),
    ("repeats=1,2", "repeats", "single value"),
    ("repeats=0", "repeats", ">= 1"),
    ("port_range=1-2", "port_range", "1024"),
    ("hyperparams.global.rounds=range(1)", "hyperparams.global.rounds", "range(START,STOP"),
    ("hyperparams.global.rounds=range(1,3,0)", "hyperparams.global.rounds", "step must not be 0"),
    ("hyperparams.global.rounds=range(3,1)", "hyperparams.global.rounds", "empty range"),
    ("hyperparams.global.rounds=range(a,3)", "hyperparams.global.rounds", "numbers"),
    ("hyperparams.global.rounds=1,,2", "hyperparams.global.rounds", "empty value"),
    ("hyperparams.global.rounds=[1,2]", "hyperparams.global.rounds", "scalar"),
    ("hyperparams.global.rounds=0.5", "hyperparams.global.rounds", "a float"),
    ("hyperparams.global.rounds=1,0.5", "hyperparams.global.rounds", "a float"),
    ("hyperparams.global.early_stop=1", "hyperparams.global.early_stop", "an int"),
    ("hyperparams.global.patience=1", "hyperparams.global.patience", "no such key"),
    ("party[5].data.info.alpha=1", "party[5].data.info.alpha", "out of range"),
    ("model.name='unterminated", "model.name", "quote"),
]


@pytest.mark.parametrize(("text", "key", "why"), OVERRIDE_ERRORS)
def test_override_errors(write: Writer, text: str, key: str, why: str) -> None:
    assert_names(spec_error(write(BASE_PARAMS), (text,)), "command line", key, why)


def test_override_given_twice(write: Writer) -> None:
    error = spec_error(write(""), ("seed=1", "seed=2"))
    assert_names(error, "command line", "seed", "more than once")


def test_fixed_override_conflicting_with_parameter(write: Writer) -> None:
    path = write(params("party.data.info.alpha: {values: [0.1, 1]}"))
    error = spec_error(path, ("party[0].data.info.alpha=0.3",))
    assert_names(error, "command line", "party[0].data.info.alpha", "same key")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", 2),
        ("-3", -3),
        ("0.5", 0.5),
        ("1e-3", 0.001),
        (".5", 0.5),
        ("true", True),
        ("False", False),
        ("null", None),
        ("~", None),
        ("mlp", "mlp"),
        ("'2'", "2"),
        ('"a\\tb"', "a\tb"),
        ("#hash", "#hash"),
        ("a: b", "a: b"),
        ("yes", "yes"),
        ("", ""),
    ],
)
def test_parse_scalar(text: str, expected: Any) -> None:
    value = parse_scalar(text)
    assert value == expected
    assert type(value) is type(expected)


def test_parse_scalar_special_floats() -> None:
    assert parse_scalar(".inf") == math.inf
    assert parse_scalar("-.inf") == -math.inf
    assert math.isnan(parse_scalar(".nan"))


# ---------------------------------------------------------------------------------------------
# Trial order


ORDER_PARAMS = params(
    """
hyperparams.global.rounds: {values: [1, 2, 3]}
model.name: {values: [a, b]}
hyperparams.global.termination_accuracy: {values: [0.5, 0.6]}
"""
)


def test_iter_trials_order(write: Writer) -> None:
    spec = load_sweep(write(ORDER_PARAMS + "repeats: 2\nseed: 10\n"))
    assert spec.trial_count() == 3 * 2 * 2 * 2
    expected = [
        (
            {
                "hyperparams.global.rounds": r,
                "model.name": m,
                "hyperparams.global.termination_accuracy": a,
            },
            rep,
        )
        for r in (1, 2, 3)
        for m in ("a", "b")
        for a in (0.5, 0.6)
        for rep in (0, 1)
    ]
    trials = list(iter_trials(spec))
    assert [(t.params, t.repeat) for t in trials] == expected
    assert [t.index for t in trials] == list(range(24))
    assert [t.trial_id for t in trials[:2]] == ["t00000", "t00001"]
    assert trials[-1].trial_id == "t00023"
    assert [t.seed for t in trials[:4]] == [10, 11, 10, 11]
    assert list(next(iter(trials)).params) == [
        "hyperparams.global.rounds",
        "model.name",
        "hyperparams.global.termination_accuracy",
    ]


def test_trial_at_agrees_with_iter_trials(write: Writer) -> None:
    spec = load_sweep(write(ORDER_PARAMS + "repeats: 3\n"))
    trials = list(iter_trials(spec))
    assert len(trials) == spec.trial_count() == 36
    assert [trial_at(spec, i) for i in range(len(trials))] == trials
    for start in (0, 1, 5, 17, 35):
        assert list(iter_trials(spec, start)) == trials[start:]
    assert list(iter_trials(spec, 36)) == []
    with pytest.raises(IndexError):
        trial_at(spec, 36)
    with pytest.raises(IndexError):
        trial_at(spec, -1)


def test_huge_sweep_is_lazy(write: Writer) -> None:
    body = params(
        """
hyperparams.global.rounds: {min: 1, max: 1000, step: 1}
hyperparams.global.max_timeout: {min: 1, max: 1000, step: 1}
hyperparams.global.termination_accuracy: {min: 0.001, max: 1, step: 0.001}
"""
    )
    spec = load_sweep(write(body + "repeats: 2\n"))
    total = spec.trial_count()
    assert total == 2 * 10**9
    last = trial_at(spec, total - 1)
    assert last.params == {
        "hyperparams.global.rounds": 1000,
        "hyperparams.global.max_timeout": 1000,
        "hyperparams.global.termination_accuracy": 1.0,
    }
    assert last.repeat == 1
    tail = list(itertools.islice(iter_trials(spec, total - 3), 10))
    assert [t.index for t in tail] == [total - 3, total - 2, total - 1]
    assert tail[-1] == last
    middle = 123_456_789
    assert next(iter_trials(spec, middle)) == trial_at(spec, middle)


# ---------------------------------------------------------------------------------------------
# Fingerprint


def test_fingerprint_is_stable_and_sensitive(write: Writer) -> None:
    body = ORDER_PARAMS + "repeats: 2\n"
    path = write(body)
    first = load_sweep(path).fingerprint()
    assert first == load_sweep(path).fingerprint()
    assert len(first) == 64
    int(first, 16)

    assert load_sweep(write(body + "parallel: 3\ntimeouts: {train: 5}\n")).fingerprint() == first
    changed = [
        write(body.replace("[0.5, 0.6]", "[0.5, 0.7]")),
        write(body.replace("[1, 2, 3]", "[1, 3, 2]")),
        write(body.replace("repeats: 2", "repeats: 3")),
        write(body + "seed: 1\n"),
        write(
            body,
            header=HEADER.replace(
                "party0.yml\n    - configs/party1.yml", "party1.yml\n    - configs/party0.yml"
            ),
        ),
    ]
    for other in changed:
        assert load_sweep(other).fingerprint() != first
    assert load_sweep(write(body), ["model.name=a"]).fingerprint() != first


# ---------------------------------------------------------------------------------------------
# The search space


def test_each_parameter_keeps_its_distribution(write: Writer) -> None:
    from seel.space import Drawn, Listed, Stepped

    spec = load_sweep(write(params("""
hyperparams.global.rounds: {min: 2, max: 6, step: 2}
hyperparams.local.optimizer.lr: {random: loguniform, low: 0.001, high: 1.0, count: 3, seed: 3}
model.name: {values: [logistic, mlp]}
""")))
    rounds, lr, model = spec.parameters
    assert rounds.dist == Stepped(2, 6, 2) and rounds.dist.is_int
    assert rounds.values == (2, 4, 6)
    assert lr.dist == Drawn("loguniform", 0.001, 1.0, 3, 3)
    assert len(lr.values) == 3 and all(0.001 <= v <= 1.0 for v in lr.values)
    assert model.dist == Listed(("logistic", "mlp"))
    assert spec.space.describe() == {
        "hyperparams.global.rounds": {"min": 2, "max": 6, "step": 2},
        "hyperparams.local.optimizer.lr": {
            "random": "loguniform", "low": 0.001, "high": 1.0, "count": 3, "seed": 3,
        },
        "model.name": {"values": ["logistic", "mlp"]},
    }
    assert spec.search is None


def test_a_search_samples_ranges_without_count_and_takes_overrides(write: Writer) -> None:
    body = params("hyperparams.local.optimizer.lr: {random: loguniform, low: 0.001, high: 1.0}")
    grid = spec_error(write(body))
    assert_names(grid, grid.file, "parameters.hyperparams.local.optimizer.lr.count", "missing")
    path = write(body + "search: {sampler: tpe, trials: 60, objective: {metric: acc}}\n")
    spec = load_sweep(path, ["search.trials=20", "search.objective.parties=min"])
    assert spec.search == {
        "sampler": "tpe", "trials": 20, "objective": {"metric": "acc", "parties": "min"},
    }
    (lr,) = spec.parameters
    assert lr.probe_values() == (0.001, 1.0)
    assert spec.fingerprint() != load_sweep(path).fingerprint()
    swept = spec_error(path, ("search.trials=10,20",))
    assert_names(swept, "command line", "search.trials", "single value")


def test_a_search_bound_of_the_wrong_type_is_refused(write: Writer) -> None:
    path = write(params("hyperparams.global.rounds: {random: uniform, low: 1, high: 5}")
                 + "search: {trials: 5}\n")
    error = spec_error(path)
    assert_names(error, path, "parameters.hyperparams.global.rounds", "is a float")
