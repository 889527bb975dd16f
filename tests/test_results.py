"""One way to write an outcome: strict JSON with non-finite numbers spelled, and one results schema."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from seel import jsonio
from seel.outcome import Outcome, PartyResult, Status
from seel.results import TRIAL_COLUMNS, duration_column, is_metric_column, result_rows


def outcome(metrics: tuple[dict[str, float], ...], **fields: Any) -> Outcome:
    doc: dict[str, Any] = {
        "trial_id": "t00003", "index": 3, "params": {"hyperparams.global.rounds": 2}, "repeat": 1,
        "seed": 4, "status": Status.OK, "phase": None, "reason": "", "attempts": 1,
        "started_at": 10.0, "elapsed_s": 1.5, "durations": {"init": 0.5, "train": 1.0},
        "rounds_completed": 2, "round_accuracies": (0.5, math.nan), "aggregator_exit": 0,
        "parties": tuple(PartyResult(i, 0, m) for i, m in enumerate(metrics)), "ports": (5000,),
    }
    return Outcome(**{**doc, **fields})


def strict(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(token)

    return json.loads(text, parse_constant=refuse)


def test_dumps_is_strict_json_with_non_finite_numbers_spelled() -> None:
    doc = {"a": [math.nan, math.inf, -math.inf, 1.5], "b": {"c": (math.nan, 2)}, "d": "NaN"}
    text = jsonio.dumps(doc)
    assert "\n" not in text and " " not in text
    assert strict(text) == {
        "a": ["NaN", "Infinity", "-Infinity", 1.5], "b": {"c": ["NaN", 2]}, "d": "NaN",
    }
    assert strict(jsonio.dumps(doc, indent=2)) == strict(text)
    assert jsonio.dumps({"x": 1.0}) == '{"x":1.0}'


def test_spelled_values_read_back_as_floats_where_a_number_is_expected() -> None:
    assert math.isnan(jsonio.number("NaN"))
    assert jsonio.number("Infinity") == math.inf and jsonio.number("-Infinity") == -math.inf
    assert jsonio.number("nan") == "nan" and jsonio.number(0.5) == 0.5 and jsonio.number(None) is None


def test_ledgers_written_before_the_policy_still_read() -> None:
    doc = jsonio.loads('{"loss": NaN, "acc": Infinity}')
    assert math.isnan(doc["loss"]) and doc["acc"] == math.inf


def test_values_json_has_no_type_for_are_written_as_text() -> None:
    import datetime

    assert strict(jsonio.dumps({"day": datetime.date(2026, 12, 3)})) == {"day": "2026-12-03"}


def test_result_rows_columns_are_the_schema() -> None:
    o = outcome(({"loss": math.nan, "acc": 0.9}, {"loss": 0.25, "acc": math.inf}))
    rows = result_rows(jsonio.loads(jsonio.dumps(o.to_json())))
    assert len(rows) == 2
    parameters = ["hyperparams.global.rounds"]
    for row in rows:
        durations = {duration_column("init"), duration_column("train")}
        assert set(row) == set(TRIAL_COLUMNS) | set(parameters) | durations | {"loss", "acc"}
        assert [c for c in row if is_metric_column(c, parameters)] == ["loss", "acc"]
    assert math.isnan(rows[0]["loss"]) and rows[0]["acc"] == 0.9
    assert rows[1]["loss"] == 0.25 and rows[1]["acc"] == math.inf
    assert math.isnan(rows[0]["final_global_acc"])
    assert (rows[0]["party"], rows[1]["party"], rows[0]["status"]) == (0, 1, "ok")


def test_a_trial_without_parties_is_one_row() -> None:
    [row] = result_rows(outcome((), status=Status.CRASHED, phase="init", round_accuracies=()).to_json())
    assert set(row) == set(TRIAL_COLUMNS) | {"hyperparams.global.rounds", "duration.init_s", "duration.train_s"}
    assert row["party"] is None and row["final_global_acc"] is None and row["status"] == "crashed"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "x"])
def test_a_string_parameter_is_never_read_as_a_number(value: str) -> None:
    o = outcome(({"acc": 0.5},), params={"name": value})
    [row] = result_rows(jsonio.loads(jsonio.dumps(o.to_json())))
    assert row["name"] == value
