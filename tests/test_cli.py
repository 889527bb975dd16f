"""The `seel` command: parsing, the --json event stream against its schema, report, plot, init,
and the dashboard of the real binary under a pty."""

from __future__ import annotations

import json
import os
import shutil
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pexpect
import pytest
from typer.testing import CliRunner

from seel.cli import app

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "sweeps" / "quick.yml"


@pytest.fixture(autouse=True)
def private_port_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEL_PORTS_DIR", str(tmp_path / "ports"))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real run of the quick sweep with --json; (run dir, stdout)."""
    out = tmp_path_factory.mktemp("quick") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEEL_PORTS_DIR", str(out.parent / "ports"))
        result = CliRunner().invoke(app, ["run", str(QUICK), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, result.stdout


def test_json_stdout_is_only_valid_events(quick_run: tuple[Path, str]) -> None:
    _, stdout = quick_run
    schema = json.loads((resources.files("seel") / "render" / "event_schema.json").read_text())
    events = [json.loads(line) for line in stdout.splitlines()]
    for event in events:
        jsonschema.validate(event, schema)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "sweep_started" and kinds[-1] == "sweep_finished"
    assert kinds.count("trial_started") == kinds.count("trial_finished") == 12
    assert {"phase", "round"} <= set(kinds)
    assert len({e["run_id"] for e in events}) == 1
    finished = [e for e in events if e["event"] == "trial_finished"]
    assert all(set(e["metrics"]) == {"0", "1"} and e["metrics"]["0"]["acc"] > 0.5 for e in finished)
    last = events[-1]
    assert last["counts"] == {"ok": 12} and last["best"]["metric"] == "acc"
    assert any(p.endswith("results.parquet") for p in last["results"])


def test_a_phase_an_engine_command_starts_is_a_valid_event() -> None:
    import io

    from seel.events import PhaseReached
    from seel.render.jsonl import JsonLinesSink

    schema = json.loads((resources.files("seel") / "render" / "event_schema.json").read_text())
    out = io.StringIO()
    sink = JsonLinesSink(out)
    sink.run_id = "r1"  # as a sweep_started event sets it
    sink.emit(PhaseReached("t00000", "submit", "train", 8.5))  # Flower's flwr run
    event = json.loads(out.getvalue())
    assert event["process"] == "submit"
    jsonschema.validate(event, schema)


def test_schema_rejects_what_it_should() -> None:
    schema = json.loads((resources.files("seel") / "render" / "event_schema.json").read_text())
    bad = {"schema": 1, "event": "round", "time": "2026-11-25T00:00:00.000Z", "run_id": "x", "trial": "t", "round": 0}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_report_json_flags_parameters_that_change_nothing(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    result = CliRunner().invoke(app, ["report", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["trials"] == 12 and report["status_counts"] == {"ok": 12}
    by_param = {(e["parameter"], e["metric"]): e for e in report["effects"]}
    rounds = by_param[("hyperparams.global.rounds", "acc")]
    assert rounds["distinguishable"] and [lv["value"] for lv in rounds["levels"]] == [1, 2, 4]
    assert all(lv["ci95"] is not None for lv in rounds["levels"])
    # quorum 0.5 with two fast, equal parties: the round ends after one reply, and that changes results
    assert set(report["best"]["acc"]) == {"0", "1"}


def test_report_on_a_terminal_shows_tables(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    result = CliRunner().invoke(app, ["report", str(out), "--metric", "loss"])
    assert result.exit_code == 0, result.output
    assert "Effect of each parameter on loss" in result.stdout
    assert "Best configurations for loss, party 0" in result.stdout
    bad = CliRunner().invoke(app, ["report", str(out), "--metric", "nope"])
    assert bad.exit_code == 2 and "no metric 'nope'" in bad.output


def test_plot_writes_legible_pngs(quick_run: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = quick_run
    result = CliRunner().invoke(app, ["plot", str(out), "--out", str(tmp_path / "acc.png")])
    assert result.exit_code == 0, result.output
    paths = [Path(p) for p in result.stdout.split()]
    assert {p.name for p in paths} == {"acc.png", "acc-timeouts.png", "acc-marginal.png"}
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_validate_shows_count_and_diffs_and_starts_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(ROOT / "sweeps" / "paper-table1.yml"),
                                      "hyperparams.global.rounds=2,3", "--show", "2"])
    assert result.exit_code == 0, result.output
    assert "50 trials on engine builtin, all checked" in result.stdout
    assert "-    rounds: 4                    # training rounds" in result.stdout
    assert "+    rounds: 2                    # training rounds" in result.stdout
    assert "t00001:" in result.stdout and "t00002:" not in result.stdout


def test_init_writes_a_sweep_that_validates(tmp_path: Path) -> None:
    target = tmp_path / "starter.yml"
    result = CliRunner().invoke(app, ["init", str(ROOT / "sweeps" / "configs" / "builtin"), "--out", str(target)])
    assert result.exit_code == 0, result.output
    text = target.read_text()
    assert "# hyperparams.global.rounds: {values: [4]}" in text
    assert "# party.data.info.alpha: {values: [0.5]}" in text
    again = CliRunner().invoke(app, ["init", str(ROOT / "sweeps" / "configs" / "builtin"), "--out", str(target)])
    assert again.exit_code == 2 and "exists" in again.output
    target.write_text(text.replace("# hyperparams.global.rounds: {values: [4]}", "hyperparams.global.rounds: {values: [1, 2]}"))
    checked = CliRunner().invoke(app, ["validate", str(target)])
    assert checked.exit_code == 0, checked.output
    assert "2 trials on engine builtin" in checked.stdout



def test_init_on_a_flower_app_writes_its_configs_and_a_sweep_that_validates(tmp_path: Path) -> None:
    pytest.importorskip("tomlkit")  # the Flower engine's TOML edits (seel[flower])
    target = tmp_path / "sweeps" / "digits.yml"
    target.parent.mkdir()
    app_dir = ROOT / "sweeps" / "flower-app"
    result = CliRunner().invoke(app, ["init", str(app_dir), "--engine", "flower", "--out", str(target)])
    assert result.exit_code == 0, result.output
    text = target.read_text()
    assert "engine: flower" in text and "  # run_config.lr: {values: [0.5]}" in text
    superlink = (tmp_path / "sweeps" / "flower-app-configs" / "superlink.yml").read_text()
    assert "  num-server-rounds: 3\n" in superlink  # the app's config, with its values
    assert "num-partitions: 2" in (tmp_path / "sweeps" / "flower-app-configs" / "supernode1.yml").read_text()
    again = CliRunner().invoke(app, ["init", str(app_dir), "--engine", "flower", "--out", str(target)])
    assert again.exit_code == 2 and "exists" in again.output
    text = text.replace("  # run_config.lr: {values: [0.5]}", "  run_config.lr: {values: [0.5, 0.1]}")
    target.write_text(text.replace("  # parties.count: {values: [2, 3]}", "  parties.count: {values: [2, 3]}"))
    checked = CliRunner().invoke(app, ["validate", str(target)])
    assert checked.exit_code == 0, checked.output
    assert "4 trials on engine flower" in checked.stdout
    not_an_app = CliRunner().invoke(app, ["init", str(tmp_path), "--engine", "flower"])
    assert not_an_app.exit_code == 2
    assert "pyproject.toml: missing: expected a Flower app" in not_an_app.output

def test_engines_lists_both(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["engines"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    named = {line.split()[0]: line for line in lines}
    assert "usable: ok" in named["builtin"]
    assert "ibmfl" in named and "flower" in named


def test_help_has_examples() -> None:
    for command in ("run", "validate", "report", "plot", "init"):
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "seel " + command in result.stdout, command


@pytest.mark.slow
def test_dashboard_renders_and_ctrl_c_exits_130_leaving_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "SEEL_PORTS_DIR": str(tmp_path / "ports"), "COLUMNS": "140", "LINES": "50"}
    child = pexpect.spawn(sys.executable, ["-m", "seel.cli", "run", str(ROOT / "sweeps" / "paper-table1.yml"),
                                           "--out", str(out)], env=env, encoding="utf-8", timeout=60,
                          dimensions=(50, 140))
    child.expect("trials/min")
    child.expect(r"best acc \S*0\.\d")
    child.expect("max_timeout=")
    child.sendintr()
    child.expect("stopping every trial")
    child.expect(pexpect.EOF, timeout=5)
    child.close()
    assert child.exitstatus == 130
    spawned = [json.loads(line) for line in (out / "procs.jsonl").read_text().splitlines()]
    for doc in (d for d in spawned if d["event"] == "spawn"):
        with pytest.raises(ProcessLookupError):
            os.kill(doc["pid"], 0)
    assert (out / "results.parquet").exists()


def test_ctrl_c_before_the_sweeps_handler_exits_130_not_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until SEEL's handler is installed (the sweep read and checked, a cluster connected),
    Python raises KeyboardInterrupt: it exits 130 (typer's doing; click alone would say
    "Aborted!" and exit 1)."""
    import seel.cli

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(seel.cli, "prepare", interrupted)
    result = CliRunner().invoke(app, ["run", str(QUICK), "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 130, result.output
    assert result.stdout == ""


NEEDS_DATA = "ibmfl-iter-avg.yml"  # its data and model files are written by `seel ibmfl data`


@pytest.mark.parametrize(
    "sweep", sorted(p.name for p in (ROOT / "sweeps").glob("*.yml") if p.name != NEEDS_DATA)
)
def test_every_shipped_sweep_validates(sweep: str) -> None:
    result = CliRunner().invoke(app, ["validate", str(ROOT / "sweeps" / sweep), "--show", "1"])
    assert result.exit_code == 0, result.output
    assert "all checked" in result.stdout


def test_the_ibmfl_sweep_without_its_data_names_the_file_and_the_command(tmp_path: Path) -> None:
    # As a fresh clone has it (tests/test_ibmfl_setup.py writes the files and validates it).
    (tmp_path / "configs" / "ibmfl").mkdir(parents=True)
    shutil.copy(ROOT / "sweeps" / NEEDS_DATA, tmp_path)
    for config in (ROOT / "sweeps" / "configs" / "ibmfl").glob("*.yml"):
        shutil.copy(config, tmp_path / "configs" / "ibmfl")
    result = CliRunner().invoke(app, ["validate", str(tmp_path / NEEDS_DATA)])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert "data/mnist.npz: no such file" in line
    assert "`seel ibmfl data " in line and line.endswith("configs/ibmfl` writes them")


def test_a_list_indexed_parameter_is_set_at_that_index(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "sweeps" / "configs" / "builtin", configs)
    agg = configs / "config_agg.yml"
    agg.write_text(agg.read_text() + "layers: [32, 64]       # widths\n")
    sweep = tmp_path / "sweep.yml"
    sweep.write_text(
        "engine: {extends: builtin, validate: null}\n"
        "configs: {aggregator: configs/config_agg.yml,"
        " parties: [configs/config_party0.yml, configs/config_party1.yml]}\n"
        "parameters:\n  layers.1: {values: [8, 16]}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(sweep), "--show", "2"])
    assert result.exit_code == 0, result.output
    assert "2 trials on engine builtin, all checked" in result.stdout
    assert "+layers: [32, 8]        # widths" in result.stdout  # the comment stays in its column
    assert "+layers: [32, 16]       # widths" in result.stdout
    bad = CliRunner().invoke(app, ["validate", str(sweep), "layers.2=4"])
    assert bad.exit_code == 2
    assert bad.stderr.strip() == f"seel: command line: layers.2: no such key in {agg}"
