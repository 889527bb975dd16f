"""The number of parties as a sweep parameter, `parties.count`: parsing and its one-line errors,
the `party[i]` rule, validation at the smallest and largest count, the configs each engine's
parties get, and one real sweep on the built-in engine with 2 and 3 parties."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from optuna.distributions import IntDistribution
from rich.console import Console
from typer.testing import CliRunner

from seel import yamledit
from seel.cli import app
from seel.enginefile import parse_engine
from seel.errors import SpecError
from seel.events import PartyState, TrialStarted
from seel.grammar import COMMAND_LINE
from seel.grid import trial_at
from seel.partycount import COUNT_PARAMETER
from seel.plan import Plan
from seel.render.live import LiveSink
from seel.run import RunSettings, prepare
from seel.search.factory import optuna_space, search_settings
from seel.space import Listed, TrialSpec

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "sweeps" / "configs"
KEY = f"parameters.{COUNT_PARAMETER}"


@pytest.fixture(autouse=True)
def private_port_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEL_PORTS_DIR", str(tmp_path / "ports"))


def sweep(
    tmp: Path,
    parameters: dict[str, Any],
    *,
    engine: str = "builtin",
    parties: int = 2,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A sweep of the shipped configs of `engine` (its first `parties` party configs), copied."""
    source = SHIPPED / engine
    configs = tmp / "configs"
    shutil.copytree(source, configs, dirs_exist_ok=True)
    names = {
        "builtin": ("config_agg.yml", [f"config_party{i}.yml" for i in range(parties)]),
        "ibmfl": ("config_agg.yml", [f"config_party{i}.yml" for i in range(parties)]),
        "flower": ("superlink.yml", [f"supernode{i}.yml" for i in range(parties)]),
    }[engine]
    if engine == "flower":  # the app is named relative to the configs
        doc = yamledit.load_roundtrip(configs / "superlink.yml")
        yamledit.set_path(doc, "app", str(ROOT / "sweeps" / "flower-app"))
        (configs / "superlink.yml").write_text(yamledit.dump(doc))
    path = tmp / "sweep.yml"
    body = {
        "name": "count",
        "engine": engine,
        "configs": {
            "aggregator": f"configs/{names[0]}",
            "parties": [f"configs/{n}" for n in names[1]],
        },
        "parameters": parameters,
        **(extra or {}),
    }
    path.write_text(json.dumps(body))
    return path


def plan_of(path: Path, overrides: tuple[str, ...] = ()) -> Plan:
    return prepare(RunSettings(sweep=path, overrides=overrides))


def spec_error(path: Path, overrides: tuple[str, ...] = ()) -> SpecError:
    with pytest.raises(SpecError) as caught:
        plan_of(path, overrides)
    return caught.value


def plain(doc: Any) -> Any:
    return yamledit.to_plain(doc)


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "search", "smallest", "largest"),
    [
        ({"values": [3, 2]}, False, 2, 3),
        ({"min": 1, "max": 4, "step": 1}, False, 1, 4),
        ({"random": "int", "low": 2, "high": 5, "count": 3, "seed": 0}, False, None, None),
        ({"random": "int", "low": 2, "high": 5}, True, 2, 5),
        ({"min": 2, "max": 6, "step": 2}, True, 2, 6),
    ],
)
def test_count_forms_load(
    tmp_path: Path, spec: dict[str, Any], search: bool, smallest: int | None, largest: int | None
) -> None:
    extra = {"search": {"trials": 2, "sampler": "random"}} if search else None
    plan = plan_of(sweep(tmp_path, {COUNT_PARAMETER: spec}, extra=extra))
    count = plan.count
    assert count.swept and count.n_configs == 2
    if smallest is not None:
        assert (count.smallest, count.largest) == (smallest, largest)
    else:  # drawn: whatever was drawn, within the range
        assert 2 <= count.smallest <= count.largest <= 5
    if search:
        distributions, _ = optuna_space(plan.spec)
        assert isinstance(distributions[COUNT_PARAMETER], IntDistribution)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"values": [2, 0]}, "at least 1, not 0"),
        ({"values": [-1]}, "at least 1, not -1"),
        ({"values": [2.5]}, "an integer, not 2.5"),
        ({"values": [True]}, "an integer, not True"),
        ({"values": ["two"]}, "an integer, not 'two'"),
        ({"values": [101]}, "at most 100, not 101"),
        ({"min": 1, "max": 3, "step": 0.5}, "int range"),
        ({"random": "uniform", "low": 1, "high": 3, "count": 2, "seed": 0}, "not uniform"),
        ({"random": "int", "low": 0, "high": 3, "count": 2, "seed": 0}, "at least 1, not 0"),
        ({"random": "int", "low": 1, "high": 1000, "count": 2, "seed": 0}, "at most 100"),
    ],
)
def test_bad_counts_name_the_sweep_and_key(tmp_path: Path, spec: dict[str, Any], why: str) -> None:
    path = sweep(tmp_path, {COUNT_PARAMETER: spec})
    error = spec_error(path)
    assert (error.file, error.key) == (str(path), KEY)
    assert why in error.why
    assert "\n" not in str(error)


def test_command_line_counts(tmp_path: Path) -> None:
    path = sweep(tmp_path, {"hyperparams.global.rounds": {"values": [1]}})
    swept = plan_of(path, ("parties.count=2,4",))
    [param] = [p for p in swept.spec.parameters if p.name == COUNT_PARAMETER]
    assert param.dist == Listed((2, 4))
    assert (swept.count.smallest, swept.count.largest) == (2, 4)
    fixed = plan_of(path, ("parties.count=3",))
    assert fixed.count.swept and (fixed.count.smallest, fixed.count.largest) == (3, 3)
    assert fixed.parties_of(trial_at(fixed.spec, 0)) == 3
    for bad, why in (("0", "at least 1"), ("x", "an integer"), ("2,1.5", "an integer")):
        error = spec_error(path, (f"parties.count={bad}",))
        assert (error.file, error.key) == (COMMAND_LINE, COUNT_PARAMETER)
        assert why in error.why


def test_cli_bad_count_is_one_line_exit_2(tmp_path: Path) -> None:
    path = sweep(tmp_path, {COUNT_PARAMETER: {"values": [0]}})
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert str(path) in line and KEY in line


# -- party[i] -------------------------------------------------------------------------------


def test_party_index_must_be_below_the_smallest_count(tmp_path: Path) -> None:
    alpha = "party[2].data.info.alpha"
    ok = plan_of(sweep(tmp_path, {COUNT_PARAMETER: {"values": [3, 4]}, alpha: {"values": [0.3]}}))
    trial = trial_at(ok.spec, 1)
    _, parties = ok.docs_for(trial, list(range(7000, 7005)))
    assert [plain(d)["data"]["info"]["alpha"] for d in parties] == [0.5, 0.5, 0.3, 0.5]

    path = sweep(tmp_path, {COUNT_PARAMETER: {"values": [2, 3]}, alpha: {"values": [0.3]}})
    error = spec_error(path)
    assert (error.file, error.key) == (str(path), f"parameters.{alpha}")
    assert "as few as 2 parties (parties.count), so indexes 0 to 1" in error.why

    path = sweep(tmp_path, {alpha: {"values": [0.3]}})  # no count: one party per config
    assert "there are 2 party configs" in spec_error(path).why
    assert plan_of(path, ("parties.count=3",)).count.smallest == 3
    error = spec_error(sweep(tmp_path, {}), ("parties.count=2", f"{alpha}=0.3"))
    assert (error.file, error.key) == (COMMAND_LINE, alpha)


def test_search_objective_party_must_be_in_every_trial(tmp_path: Path) -> None:
    count = {COUNT_PARAMETER: {"random": "int", "low": 2, "high": 4}}
    for party, fails in ((1, False), (2, True)):
        search = {"trials": 2, "objective": {"metric": "acc", "parties": party}}
        path = sweep(tmp_path, count, extra={"search": search})
        if fails:  # refused before anything starts: by prepare(), which checks search: too
            with pytest.raises(SpecError, match="smallest trial has 2 parties") as caught:
                search_settings(plan_of(path))
            assert caught.value.key == "search.objective.parties"
        else:
            assert search_settings(plan_of(path)) is not None


# -- validation and rendering: built-in -----------------------------------------------------


def test_builtin_configs_of_three_parties_from_two(tmp_path: Path) -> None:
    plan = plan_of(sweep(tmp_path, {COUNT_PARAMETER: {"values": [2, 3]}}))
    trial = trial_at(plan.spec, 1)
    assert plan.parties_of(trial) == 3
    ports = [7000, 7001, 7002, 7003]
    agg, parties = plan.docs_for(trial, ports)
    assert plain(agg)["hyperparams"]["global"]["num_parties"] == 3
    infos = [plain(d)["data"]["info"] for d in parties]
    assert [(i["party_index"], i["num_parties"]) for i in infos] == [(0, 3), (1, 3), (2, 3)]
    assert [plain(d)["connection"]["info"]["port"] for d in parties] == ports[1:]
    assert all(plain(d)["aggregator"]["port"] == 7000 for d in parties)
    assert "# the same seed on every party" in yamledit.dump(parties[2])  # config 0's comments
    configs = tmp_path / "configs"
    assert plan.config_paths(3) == [
        configs / "config_agg.yml",
        configs / "config_party0.yml",
        configs / "config_party1.yml",
        configs / "config_party0.yml",
    ]
    trial_dir = tmp_path / "t"
    trial_dir.mkdir()
    _, written = plan.write_configs(trial, ports, trial_dir)
    assert [p.name for p in written] == [f"config_party{i}.yml" for i in range(3)]
    _, two = plan.docs_for(trial_at(plan.spec, 0), ports[:3])
    assert len(two) == 2


def test_without_a_count_the_configs_are_as_written(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    plan = plan_of(sweep(tmp_path, {"hyperparams.global.rounds": {"values": [1]}}))
    # a user's own index, left alone when the sweep does not set the count
    doc = yamledit.load_roundtrip(SHIPPED / "builtin" / "config_party1.yml")
    yamledit.set_path(doc, "data.info.party_index", 0)
    (configs / "config_party1.yml").write_text(yamledit.dump(doc))
    plan = plan_of(tmp_path / "sweep.yml")
    assert not plan.count.swept and plan.parties_of(trial_at(plan.spec, 0)) == 2
    _, parties = plan.docs_for(trial_at(plan.spec, 0), [7000, 7001, 7002])
    assert [plain(d)["data"]["info"]["party_index"] for d in parties] == [0, 0]


def test_a_key_the_sweep_sets_keeps_its_value(tmp_path: Path) -> None:
    """A quorum below the count: the sweep's own value wins over the engine's count key."""
    path = sweep(tmp_path, {COUNT_PARAMETER: {"values": [3]}})
    plan = plan_of(path, ("hyperparams.global.num_parties=2",))
    agg, parties = plan.docs_for(trial_at(plan.spec, 0), list(range(7000, 7004)))
    assert plain(agg)["hyperparams"]["global"]["num_parties"] == 2
    assert plain(parties[2])["data"]["info"]["num_parties"] == 3


def test_validation_runs_at_the_smallest_count(tmp_path: Path) -> None:
    path = sweep(tmp_path, {COUNT_PARAMETER: {"values": [2, 3]}})
    error = spec_error(path, ("hyperparams.global.num_parties=3",))
    assert error.key == "hyperparams.global.num_parties"
    assert error.why.startswith("with 2 parties (parties.count): 3 parties required")


def test_a_party_config_without_its_index_key_is_named(tmp_path: Path) -> None:
    path = sweep(tmp_path, {COUNT_PARAMETER: {"values": [2]}})
    party = tmp_path / "configs" / "config_party1.yml"
    party.write_text(party.read_text().replace("    party_index: 1", ""))
    error = spec_error(path)
    assert (error.file, error.key) == (str(party), "data.info.party_index")
    assert "writes the party's index here (parties.count)" in error.why


def test_an_aggregator_count_key_is_set_where_the_config_has_it(tmp_path: Path) -> None:
    """Flower's `min-nodes` is the shipped app's own run_config key: another app may not have it."""
    path = sweep(tmp_path, {COUNT_PARAMETER: {"values": [3]}}, engine="flower", parties=1)
    superlink = tmp_path / "configs" / "superlink.yml"
    superlink.write_text(superlink.read_text().replace("  min-nodes: 2\n", ""))
    agg, parties = plan_of(path).docs_for(
        TrialSpec("t00000", 0, {COUNT_PARAMETER: 3}, 0, 0), list(range(7000, 7004))
    )
    assert "min-nodes" not in plain(agg)["run_config"]
    assert plain(parties[2])["node_config"] == {"partition-id": 2, "num-partitions": 3}


def test_index_and_unique_keys_are_party_keys(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "aggregator": {"command": ["x"], "port_keys": ["p"], "index_keys": ["i"]},
        "party": {"command": ["x"], "port_keys": ["p"]},
        "lifecycle": [{"phase": "init", "process": "aggregator", "expect": "up"}],
        "metrics": "(?P<dict>.*)",
    }
    with pytest.raises(SpecError) as caught:
        parse_engine(base, "engine.yml")
    assert caught.value.key == "aggregator.index_keys"


# -- rendering: Flower and IBM FL -----------------------------------------------------------


def test_flower_supernodes_learn_their_partition_and_the_run_its_min_nodes(tmp_path: Path) -> None:
    plan = plan_of(sweep(tmp_path, {COUNT_PARAMETER: {"values": [3]}}, engine="flower", parties=1))
    agg, parties = plan.docs_for(trial_at(plan.spec, 0), list(range(7000, 7004)))
    assert plain(agg)["run_config"]["min-nodes"] == 3
    assert [plain(d)["node_config"] for d in parties] == [
        {"partition-id": i, "num-partitions": 3} for i in range(3)
    ]
    assert [plain(d)["supernode"] for d in parties] == [
        {"port": 7001 + i, "superlink_port": 7000} for i in range(3)
    ]


def ibmfl_project(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    for name in ("data/mnist.npz", "data/data_party0.npz", "data/data_party1.npz", "data/own.npz"):
        (configs / name).parent.mkdir(parents=True, exist_ok=True)
        (configs / name).write_bytes(b"x")
    (configs / "model_architecture.pickle").write_bytes(b"x")


def test_ibmfl_runs_up_to_one_party_per_config(tmp_path: Path) -> None:
    path = sweep(tmp_path, {COUNT_PARAMETER: {"values": [1, 2]}}, engine="ibmfl")
    ibmfl_project(tmp_path)
    plan = plan_of(path)
    agg, parties = plan.docs_for(trial_at(plan.spec, 0), [7000, 7001])
    assert plain(agg)["hyperparams"]["global"]["num_parties"] == 1
    assert [plain(d)["data"]["info"]["npz_file"] for d in parties] == ["data/data_party0.npz"]

    path = sweep(tmp_path, {COUNT_PARAMETER: {"values": [2, 3]}}, engine="ibmfl")
    error = spec_error(path)
    assert (error.file, error.key) == (str(path), KEY)
    assert "parties 0 and 2 would share data.info.npz_file" in error.why
    assert "party[2].data.info.npz_file" in error.why
    error = spec_error(sweep(tmp_path, {}, engine="ibmfl"), ("parties.count=3",))
    assert (error.file, error.key) == (COMMAND_LINE, COUNT_PARAMETER)

    own = {"party[2].data.info.npz_file": {"values": ["data/own.npz"]}}
    plan = plan_of(sweep(tmp_path, {COUNT_PARAMETER: {"values": [3]}, **own}, engine="ibmfl"))
    _, parties = plan.docs_for(trial_at(plan.spec, 0), list(range(7000, 7004)))
    assert [plain(d)["data"]["info"]["npz_file"] for d in parties] == [
        "data/data_party0.npz",
        "data/data_party1.npz",
        "data/own.npz",
    ]
    # party 0 still reads config 0's own file: it is still checked
    (tmp_path / "configs" / "data" / "data_party0.npz").unlink()
    error = spec_error(tmp_path / "sweep.yml")
    assert (Path(error.file).name, error.key) == ("config_party0.yml", "data.info.npz_file")


# -- a real sweep ---------------------------------------------------------------------------


def test_builtin_sweep_of_two_and_three_parties(tmp_path: Path) -> None:
    """Trials of 2 and 3 parties: each party trains on its share and reports its metrics, the
    aggregator waits for all of them, the results have one row per party of each trial."""
    path = sweep(
        tmp_path,
        {COUNT_PARAMETER: {"values": [2, 3]}, "hyperparams.global.rounds": {"values": [1]}},
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(out / "results.parquet").sort("trial_id", "party")
    rows = table.select("trial_id", COUNT_PARAMETER, "party", "status").rows()
    assert rows == [
        ("t00000", 2, 0, "ok"),
        ("t00000", 2, 1, "ok"),
        ("t00001", 3, 0, "ok"),
        ("t00001", 3, 1, "ok"),
        ("t00001", 3, 2, "ok"),
    ]
    assert table["acc"].null_count() == 0
    trial_dir = out / "trials" / "t00001"
    agg = yamledit.to_plain(yamledit.load_roundtrip(trial_dir / "config_agg.yml"))
    assert agg["hyperparams"]["global"]["num_parties"] == 3
    assert "Total number of registered parties:3" in (trial_dir / "aggregator.log").read_text()
    ledger = [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]
    assert sorted(len(record["parties"]) for record in ledger) == [2, 3]


def test_dashboard_shows_each_trial_its_own_parties() -> None:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    sink = LiveSink(console)
    for trial_id, n_parties in (("t00000", 2), ("t00001", 3)):
        sink.emit(TrialStarted(trial_id, {COUNT_PARAMETER: n_parties}, 0, 1))
        for party in range(n_parties):
            sink.emit(PartyState(trial_id, party, "registered"))
    console.print(sink.render())
    text = console.file.getvalue()  # type: ignore[attr-defined]
    rows = {t: line for line in text.splitlines() for t in ("t00000", "t00001") if t in line}
    assert "0:registered 1:registered" in rows["t00000"]
    assert "2:registered" not in rows["t00000"]
    assert "0:registered 1:registered 2:registered" in rows["t00001"]


def test_plan_counts_for_a_trial_spec(tmp_path: Path) -> None:
    plan = plan_of(sweep(tmp_path, {COUNT_PARAMETER: {"min": 1, "max": 3, "step": 1}}))
    spec = TrialSpec("t00009", 9, {COUNT_PARAMETER: 1}, 0, 0)
    assert plan.parties_of(spec) == 1
    agg, parties = plan.docs_for(spec, [7000, 7001])
    assert plain(agg)["hyperparams"]["global"]["num_parties"] == 1
    assert plain(parties[0])["data"]["info"] == {
        **plain(parties[0])["data"]["info"],
        "party_index": 0,
        "num_parties": 1,
    }


def test_validate_shows_each_party_made_from_a_config(tmp_path: Path) -> None:
    path = sweep(tmp_path, {COUNT_PARAMETER: {"values": [3]}})
    result = CliRunner().invoke(app, ["validate", str(path), "--show", "1"])
    assert result.exit_code == 0, result.output
    assert "t00000/config_party0.yml (party 2)" in result.stdout
    assert "+    party_index: 2" in result.stdout
    assert "+    num_parties: 3               # registrations needed" in result.stdout
