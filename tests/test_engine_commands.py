"""The engine schema for deployments whose processes take no commands (the shape of Flower's):
commands of a trial, captured variables, JSON-confirmed completion, ANSI stripped, per-trial
environment and files, descendant sessions stopped, round records and kill-at-round faults.

The whole-trial tests drive a fake (tests/children/flowerish.py), so they cost a second each.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from seel.engine import RoundLine
from seel.enginefile import load_engine, parse_engine
from seel.errors import SpecError
from seel.events import RoundFinished
from seel.jsoncheck import json_mismatch
from seel.rounds import RoundTracker
from seel.run import RunSettings, prepare, run_sweep
from seel.trialfiles import TemplateError, edit_toml, format_value

from .test_trial_fake import ListSink, ledger, transcript

FAKE = str(Path(__file__).parent / "children" / "flowerish.py")

ENGINE: dict[str, Any] = {
    "name": "flowerish",
    "python": sys.executable,
    "check": ["{python}", "-c", "pass"],
    "aggregator": {
        "command": ["{python}", FAKE, "link", "--arg", "127.0.0.1:{cfg:link.port}"],
        "port_keys": ["link.port"],
    },
    "party": {
        "command": ["{python}", FAKE, "node", "--arg", "{cfg:node_config}"],
        "port_keys": ["node.port"],
        "aggregator_port_keys": ["node.link_port"],
        "kill_at_round_key": "fault.kill_at_round",
    },
    "commands": {
        "submit": ["{python}", FAKE, "submit", "--arg", "{cfg:run_config}", "--rounds", "{agg:rounds}"],
        "status": ["{python}", FAKE, "status", "--run-id", "{var:run_id}", "--status", "{cfg:outcome}"],
    },
    "files": [{"path": "home/conf.toml", "text": "link = {cfg:link.port}\n"}],
    "env": {"FAKE_HOME": "{trial_dir}/home"},
    "strip_ansi": True,
    "stop_tree": True,
    "lifecycle": [
        {"phase": "init", "process": "aggregator", "expect": "INFO: link ready"},
        {"phase": "init", "process": "parties", "expect": "node ready", "expect_metrics": True},
        {"phase": "train", "process": "submit", "capture": r"started run (?P<run_id>\d+)"},
        {"phase": "train", "process": "submit", "expect": "finished", "expect_exit": True},
        {"phase": "eval", "process": "status",
         "expect_json": {"runs.0.status": "finished:completed", "runs.0.id": "4242"}},
    ],
    "failures": [{"marker": "Traceback (most recent call last)", "status": "crashed"}],
    "round": r"\[ROUND (?P<round>\d+)/(?P<rounds>\d+)\]",
    "round_records": r"Record: (?P<dict>\{.*\})",
    "round_value": "acc",
    "metrics": r"metrics (?P<dict>\{.*\})",
    "timeouts": {"init": 10, "train": 10, "eval": 10, "stop": 5},
    "stop": {"grace_s": 0.2, "term_grace_s": 2.0},
}


def write_sweep(tmp: Path, outcome: str = "finished:completed", kill_at_round: int = 0) -> Path:
    (tmp / "link.yml").write_text(
        json.dumps({"link": {"port": 1}, "rounds": 2, "outcome": outcome,
                    "run_config": {"lr": 0.5, "split": "iid"}})
    )
    (tmp / "node0.yml").write_text(
        json.dumps({"node": {"port": 1, "link_port": 1}, "fault": {"kill_at_round": kill_at_round},
                    "node_config": {"partition-id": 0, "num-partitions": 1}})
    )
    sweep = {
        "name": "flowerish",
        "engine": ENGINE,
        "configs": {"aggregator": "link.yml", "parties": ["node0.yml"]},
        "parameters": {"run_config.lr": {"values": [0.25]}},
    }
    path = tmp / "sweep.yml"
    path.write_text(json.dumps(sweep))
    return path


async def run(tmp: Path, **kwargs: Any) -> tuple[dict[str, Any], ListSink, Path]:
    sink = ListSink()
    settings = RunSettings(
        sweep=write_sweep(tmp, **kwargs), out=tmp / "run", retries=0, ports_dir=tmp / "ports"
    )
    result = await run_sweep(settings, sink)
    [record] = ledger(result.run_dir)
    return record, sink, result.run_dir


def live(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- whole trials ----------------------------------------------------------------------------


async def test_trial_of_processes_that_take_no_commands(tmp_path: Path) -> None:
    record, sink, run_dir = await run(tmp_path)
    assert record["status"] == "ok", record["reason"]
    # rounds from a command's stream: a round is finished by its record holding `acc`
    assert [(e.round, e.accuracy, e.rounds) for e in sink.of(RoundFinished)] == [
        (1, 0.1, 2), (2, 0.2, 2),
    ]
    assert record["rounds_completed"] == 2
    rounds = (run_dir / "trials" / "t00000" / "rounds.jsonl").read_text().splitlines()
    assert json.loads(rounds[1]) == {"round": 2, "records": {"loss": 0.5, "acc": 0.2}}
    assert record["parties"][0]["metrics"] == {"acc": 0.9, "loss": 0.25}
    # mappings as TOML pairs; per-trial environment and files; the swept value is in
    submit = transcript(run_dir, "t00000", "submit")
    assert 'run config lr=0.25 split="iid"' in submit
    node = transcript(run_dir, "t00000", "party0")
    assert "node ready with partition-id=0 num-partitions=1" in node
    assert re.search(r"node conf link = \d+", node)
    # colour codes are gone from what is matched and kept
    link = transcript(run_dir, "t00000", "aggregator")
    assert "INFO: link ready on 127.0.0.1:" in link and "\x1b" not in link
    # the helper the link started in a session of its own went down with it
    helper = int(re.search(r"helper pid (\d+)", link).group(1))  # type: ignore[union-attr]
    assert "descendant groups" in link
    assert not live(helper)


async def test_completion_is_confirmed_by_the_status_json(tmp_path: Path) -> None:
    record, _, run_dir = await run(tmp_path, outcome="finished:failed")
    assert (record["status"], record["phase"]) == ("failed", "eval")
    assert 'runs.0.status is "finished:failed", expected "finished:completed"' in record["reason"]
    link = transcript(run_dir, "t00000", "aggregator")
    helper = int(re.search(r"helper pid (\d+)", link).group(1))  # type: ignore[union-attr]
    assert not live(helper)


async def test_a_process_killed_at_a_round_is_a_fault_not_a_crash(tmp_path: Path) -> None:
    record, _, run_dir = await run(tmp_path, kill_at_round=1)
    assert record["status"] == "ok", record["reason"]
    assert record["parties"][0]["exit_code"] == -9
    assert "SIGKILL" in transcript(run_dir, "t00000", "party0")


# -- the schema ------------------------------------------------------------------------------


def engine_with(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(ENGINE)
    doc.update(changes)
    return doc


def test_the_shipped_flower_engine_loads() -> None:
    engine = load_engine("flower", "test")
    assert set(engine.commands) == {"submit", "status"}
    assert engine.strip_ansi and engine.stop_tree
    assert engine.party.kill_at_round_key == "fault.kill_at_round"
    assert engine.lifecycle[-1].expect_json == (("runs.0.status", '"finished:completed"'),)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"commands": {"parties": ["x"]}}, "engine.commands.parties"),
        ({"commands": {"submit": []}}, "engine.commands.submit"),
        ({"lifecycle": [{"phase": "init", "process": "nobody", "expect": "x"}]},
         "engine.lifecycle[0].process"),
        ({"lifecycle": [{"phase": "eval", "process": "status", "expect_json": {"a": [1]}}]},
         "engine.lifecycle[0].expect_json.a"),
        ({"lifecycle": [{"phase": "init", "process": "submit", "capture": "("}]},
         "engine.lifecycle[0].capture"),
        ({"files": [{"path": "/etc/x", "text": ""}]}, "engine.files[0].path"),
        ({"files": [{"path": "../x", "text": ""}]}, "engine.files[0].path"),
        ({"round_records": "no group"}, "engine.round_records"),
        ({"strip_ansi": "yes"}, "engine.strip_ansi"),
        ({"aggregator": {"command": ["x"], "port_keys": [], "toml_edits": [{"dir": "a"}]}},
         "engine.aggregator.toml_edits[0].file"),
    ],
)
def test_schema_errors_name_the_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_engine(engine_with(**changes), "sweep.yml", "engine")
    assert err.value.key == key


# -- the pieces ------------------------------------------------------------------------------


def test_mappings_are_written_as_toml_pairs() -> None:
    assert format_value({"a": 1, "b": 0.5, "c": "x y", "d": True}) == 'a=1 b=0.5 c="x y" d=true'
    assert format_value({}) == ""
    assert format_value(3) == "3"


def test_round_records_finish_a_round_at_its_value() -> None:
    engine = parse_engine(ENGINE, "test")
    tracker = RoundTracker(engine)
    assert tracker.feed("Record: {'acc': 0.5}") is None  # before any round started
    assert tracker.feed("[ROUND 1/3]") is None
    assert tracker.started == 1
    assert tracker.feed("Record: {'loss': 2.0}") is None
    assert tracker.feed("Record: {'acc': 0.5}") == RoundLine(1, 3, 0.5)
    assert tracker.feed("Record: {'acc': 0.6}") is None  # a round finishes once
    assert tracker.records == {1: {"loss": 2.0, "acc": 0.6}}


@pytest.mark.parametrize(
    ("lines", "why"),
    [
        (['{"runs": [{"status": "finished:completed"}]}'], None),
        (["Using SuperLink x", "{", '  "runs": [{"status": "finished:completed"}]', "}"], None),
        (['{"runs": [{"status": "finished:failed"}]}'],
         'runs.0.status is "finished:failed", expected "finished:completed"'),
        (['{"runs": []}'], "runs.0.status is missing"),
        (["no json here"], "no JSON in the output"),
    ],
)
def test_json_mismatch(lines: list[str], why: str | None) -> None:
    assert json_mismatch(lines, (("runs.0.status", '"finished:completed"'),)) == why


@pytest.mark.skipif(importlib.util.find_spec("tomlkit") is None, reason="needs tomlkit")
def test_toml_edits_keep_comments_and_refuse_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.flwr.app.config]\nlr = 0.5  # local learning rate\nname = 'a'\n")
    edit_toml(path, "tool.flwr.app.config", {"lr": 0.1, "name": "b"})
    head, lr, name = path.read_text().splitlines()
    assert (head, lr) == ("[tool.flwr.app.config]", "lr = 0.1  # local learning rate")
    assert name in ('name = "b"', "name = 'b'")  # tomlkit >= 0.15.3 keeps the literal string
    with pytest.raises(TemplateError, match="has no key 'lrr'"):
        edit_toml(path, "tool.flwr.app.config", {"lrr": 0.1})
    with pytest.raises(TemplateError, match="no table"):
        edit_toml(path, "tool.other", {"lr": 0.1})


def test_a_template_key_missing_from_the_configs_is_a_spec_error(tmp_path: Path) -> None:
    bad = engine_with(commands={**ENGINE["commands"], "submit": ["{python}", "{cfg:nope}"]})
    sweep = write_sweep(tmp_path)
    data = json.loads(sweep.read_text())
    data["engine"] = bad
    sweep.write_text(json.dumps(data))
    with pytest.raises(SpecError) as err:
        prepare(RunSettings(sweep=sweep))
    assert (Path(err.value.file).name, err.value.key) == ("link.yml", "nope")


async def test_a_variable_no_step_captured_fails_the_trial(tmp_path: Path) -> None:
    bad = engine_with(commands={**ENGINE["commands"], "status": ["{python}", "{var:nothing}"]})
    sweep = write_sweep(tmp_path)
    data = json.loads(sweep.read_text())
    data["engine"] = bad
    sweep.write_text(json.dumps(data))
    settings = RunSettings(sweep=sweep, out=tmp_path / "run", retries=0, ports_dir=tmp_path / "ports")
    result = await run_sweep(settings, ListSink())
    [record] = ledger(result.run_dir)
    assert (record["status"], record["phase"]) == ("failed", "eval")
    assert "{var:nothing}" in record["reason"]
    link = transcript(result.run_dir, "t00000", "aggregator")
    helper = int(re.search(r"helper pid (\d+)", link).group(1))  # type: ignore[union-attr]
    assert not live(helper)
