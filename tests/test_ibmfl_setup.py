"""Setting up the real IBM FL: the files its configs name are checked before anything starts,
`seel ibmfl data` writes them, `seel ibmfl setup` builds its environment (planned, not run: IBM FL
is not in CI), and `seel engines` says how to point SEEL at it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import joblib
import numpy as np
import pytest
from typer.testing import CliRunner

from seel.cli import app
from seel.errors import SeelError, SpecError
from seel.ibmfl import environment
from seel.ibmfl.files import named_files, write_command, write_files
from seel.run import RunSettings, prepare

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "sweeps" / "configs" / "ibmfl"
NAMED = ("data/mnist.npz", "data/data_party0.npz", "data/data_party1.npz", "model_architecture.pickle")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the shipped IBM FL sweep and configs, without their data and model files."""
    configs = tmp_path / "configs" / "ibmfl"
    configs.mkdir(parents=True)
    for name in ("config_agg.yml", "config_party0.yml", "config_party1.yml"):
        shutil.copy(SHIPPED / name, configs / name)
    shutil.copy(ROOT / "sweeps" / "ibmfl-iter-avg.yml", tmp_path / "sweep.yml")
    return tmp_path


def touch_named(configs: Path, skip: str = "") -> None:
    for name in NAMED:
        if name != skip:
            (configs / name).parent.mkdir(parents=True, exist_ok=True)
            (configs / name).write_bytes(b"x")


def spec_error(project: Path, overrides: Sequence[str] = ()) -> SpecError:
    with pytest.raises(SpecError) as caught:
        prepare(RunSettings(sweep=project / "sweep.yml", overrides=tuple(overrides)))
    return caught.value


# -- validation -----------------------------------------------------------------------------


def test_missing_data_names_the_config_file_and_key(project: Path) -> None:
    error = spec_error(project)
    assert error.file == str(project / "configs" / "ibmfl" / "config_agg.yml")
    assert error.key == "data.info.npz_file"
    assert error.why.startswith("data/mnist.npz: no such file (")
    assert "seel ibmfl data" in error.why  # the engine says how to make them


@pytest.mark.parametrize(
    ("skip", "config", "key"),
    [
        ("data/data_party1.npz", "config_party1.yml", "data.info.npz_file"),
        ("model_architecture.pickle", "config_party0.yml", "model.spec.model_definition"),
    ],
)
def test_each_missing_file_is_named(project: Path, skip: str, config: str, key: str) -> None:
    touch_named(project / "configs" / "ibmfl", skip=skip)
    error = spec_error(project)
    assert (Path(error.file).name, error.key) == (config, key)
    assert error.why.startswith(f"{skip}: no such file")


def test_all_files_present_validates(project: Path) -> None:
    touch_named(project / "configs" / "ibmfl")
    plan = prepare(RunSettings(sweep=project / "sweep.yml"))
    assert plan.spec.space.grid_size() == 75


def test_swept_and_fixed_file_values_are_checked(project: Path) -> None:
    configs = project / "configs" / "ibmfl"
    touch_named(configs)
    (configs / "data" / "other.npz").write_bytes(b"x")
    prepare(RunSettings(sweep=project / "sweep.yml", overrides=("data.info.npz_file=data/other.npz",)))
    error = spec_error(project, ["data.info.npz_file=data/gone.npz"])
    assert (error.file, error.key) == ("command line", "data.info.npz_file")
    assert error.why.startswith("data/gone.npz: no such file")
    error = spec_error(project, ["party[1].data.info.npz_file=data/other.npz,data/gone.npz"])
    assert (error.file, error.key) == (str(project / "sweep.yml"), "parameters.party[1].data.info.npz_file")
    assert error.why.startswith("data/gone.npz: no such file")


def test_ibmfl_paths_resolve_against_the_working_directory_not_the_party_config(
    project: Path,
) -> None:
    # IBM FL runs in the aggregator config's directory (cwd: config): a party config elsewhere
    # names its files relative to that directory, as IBM FL will open them.
    configs = project / "configs" / "ibmfl"
    touch_named(configs)
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    shutil.move(configs / "config_party1.yml", elsewhere / "config_party1.yml")
    text = (project / "sweep.yml").read_text()
    (project / "sweep.yml").write_text(
        text.replace("configs/ibmfl/config_party1.yml", "elsewhere/config_party1.yml")
    )
    prepare(RunSettings(sweep=project / "sweep.yml"))


def test_builtin_null_data_file_is_the_default(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "sweeps" / "configs" / "builtin", tmp_path / "configs" / "builtin")
    shutil.copy(ROOT / "sweeps" / "quick.yml", tmp_path / "quick.yml")
    agg = tmp_path / "configs" / "builtin" / "config_agg.yml"
    agg.write_text(agg.read_text().replace("    dataset: digits", "    npz_file: null\n    dataset: digits"))
    prepare(RunSettings(sweep=tmp_path / "quick.yml"))
    with pytest.raises(SpecError) as caught:
        prepare(RunSettings(sweep=tmp_path / "quick.yml", overrides=("data.info.npz_file=no.npz",)))
    assert caught.value.key == "data.info.npz_file"
    assert "no.npz: no such file" in caught.value.why


def test_seel_validate_exits_2_when_files_are_missing(project: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(project / "sweep.yml")])
    assert result.exit_code == 2
    assert "config_agg.yml: data.info.npz_file: data/mnist.npz: no such file" in result.output
    assert "all checked" not in result.output


# -- seel ibmfl data ------------------------------------------------------------------------


def test_named_files_of_the_shipped_configs() -> None:
    files = named_files(SHIPPED)
    assert [p.relative_to(SHIPPED.resolve()).as_posix() for p in files.all()] == list(NAMED)


def test_data_writer_writes_what_the_configs_name(project: Path) -> None:
    configs = project / "configs" / "ibmfl"
    files = write_files(sys.executable, configs, seed=3)  # this Python has numpy and sklearn
    assert {p.relative_to(configs.resolve()).as_posix() for p in files.all()} == set(NAMED)
    agg = np.load(configs / "data" / "mnist.npz")
    parts = [np.load(configs / "data" / f"data_party{i}.npz") for i in (0, 1)]
    for arrays in (agg, *parts):
        assert set(arrays.files) == {"x_train", "y_train", "x_test", "y_test"}
        assert arrays["x_train"].dtype == np.float64
        assert arrays["x_train"].shape[1] == 64
        assert 0.0 <= arrays["x_train"].min() and arrays["x_train"].max() <= 1.0
        assert set(np.unique(arrays["y_train"])) <= set(range(10))
    total = len(agg["y_test"]) + sum(len(p["y_train"]) + len(p["y_test"]) for p in parts)
    assert total == 1797  # every digit used once
    model = joblib.load(configs / "model_architecture.pickle")
    assert type(model).__name__ == "SGDClassifier"
    assert model.loss == "log_loss"
    assert list(model.classes_) == list(range(10))
    assert prepare(RunSettings(sweep=project / "sweep.yml")).spec.space.grid_size() == 75


def test_data_writer_is_seeded(tmp_path: Path) -> None:
    from seel.ibmfl import make_files

    for name in ("config_agg.yml", "config_party0.yml", "config_party1.yml"):
        shutil.copy(SHIPPED / name, tmp_path / name)

    def party0_labels() -> np.ndarray:
        return np.asarray(np.load(tmp_path / "data" / "data_party0.npz")["y_train"])

    def written_here(seed: int) -> np.ndarray:
        # The writer's own arguments, run in this process: a second interpreter importing
        # scikit-learn per seed adds nothing the command run once below does not show.
        argv = write_command(sys.executable, named_files(tmp_path), seed)
        assert argv[1] == make_files.__file__
        assert make_files.main(argv[2:]) == 0
        return party0_labels()

    write_files(sys.executable, tmp_path, seed=1)  # the command, as `seel ibmfl data` runs it
    first = party0_labels()
    again, other = written_here(1), written_here(2)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_data_writer_imports_nothing_of_seel(tmp_path: Path) -> None:
    # It runs with IBM FL's Python, where SEEL is not installed.
    files = named_files(SHIPPED)
    argv = write_command(sys.executable, files, 0)
    script = argv[1]
    probe = (
        "import runpy, sys; sys.argv = ['x', '--help']; "
        f"sys.path = [p for p in sys.path if p not in ('', {str(ROOT)!r})]\n"
        f"try:\n    runpy.run_path({script!r}, run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "assert not any(m == 'seel' or m.startswith('seel.') for m in sys.modules), 'imports seel'"
    )
    done = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_data_writer_failure_is_one_error(tmp_path: Path) -> None:
    for name in ("config_agg.yml", "config_party0.yml", "config_party1.yml"):
        shutil.copy(SHIPPED / name, tmp_path / name)
    with pytest.raises(SeelError, match="could not write the files"):
        write_files("false", tmp_path)  # a Python that fails
    result = CliRunner().invoke(app, ["ibmfl", "data", str(tmp_path), "--python", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "nope" in result.output


# -- seel ibmfl setup -----------------------------------------------------------------------


def fake_wheel(tmp_path: Path) -> Path:
    wheel = tmp_path / environment.WHEEL_NAME
    wheel.write_bytes(b"PK")
    return wheel


def test_setup_plan_installs_the_wheel_without_its_pins_then_what_works(tmp_path: Path) -> None:
    wheel, venv = fake_wheel(tmp_path), tmp_path / "env"
    commands = environment.setup_commands(wheel, venv, base_python="/usr/bin/python3.11")
    python = str(venv / "bin" / "python")
    assert commands[0] == ["/usr/bin/python3.11", "-m", "venv", str(venv)]
    installs = [c for c in commands if c[1:4] == ["-m", "pip", "install"]]
    assert all(c[0] == python for c in installs)
    assert any("--no-deps" in c and str(wheel) in c for c in installs)
    deps = next(c for c in installs if "Flask==2.0.3" in c)
    assert {"Werkzeug==2.0.3", "parse", "scikit-learn", "numpy", "gensim"} <= set(deps)
    assert str(wheel) not in deps  # the wheel's own pins never reach pip
    assert not any("http" in part for c in commands for part in c)  # nothing downloads the wheel
    assert commands[-1][:2] == [python, "-c"] and "import ibmfl" in commands[-1][2]


def test_setup_runs_the_plan_in_order_and_stops_at_a_failure(tmp_path: Path) -> None:
    wheel, venv = fake_wheel(tmp_path), tmp_path / "env"
    ran: list[list[str]] = []

    def run(argv: Sequence[str]) -> int:
        ran.append(list(argv))
        return 1 if "--no-deps" in argv else 0

    with pytest.raises(SeelError, match="exit code 1"):
        environment.build(wheel, venv, lambda _: None, run)
    pip = ["-m", "pip", "install"]
    assert [c[1:4] for c in ran] == [["-m", "venv", str(venv.resolve())], pip, pip]  # upgrade, wheel
    ran.clear()
    python = environment.build(wheel, venv, lambda _: None, lambda argv: ran.append(list(argv)) or 0)
    assert python == venv.resolve() / "bin" / "python"
    assert len(ran) == len(environment.setup_commands(wheel, venv))


def test_setup_dry_run_prints_the_commands(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path)
    result = CliRunner().invoke(
        app, ["ibmfl", "setup", "--wheel", str(wheel), "--venv", str(tmp_path / "env"), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(environment.setup_commands(wheel, tmp_path / "env"))
    assert any("--no-deps" in line for line in lines)
    assert not (tmp_path / "env").exists()


def test_setup_without_the_wheel_says_where_it_is(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ibmfl", "setup", "--wheel", str(tmp_path / "x.whl")])
    assert result.exit_code == 2
    assert "IBM/federated-learning-lib" in result.output


# -- seel engines ---------------------------------------------------------------------------


def test_engines_names_seel_ibmfl_python_when_ibmfl_is_not_found(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["engines", "--python", str(tmp_path / "no-python")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    ibmfl = lines[next(i for i, line in enumerate(lines) if line.startswith("ibmfl")) :]
    assert "not usable" in ibmfl[0]
    assert str(tmp_path / "no-python") in ibmfl[0]
    assert any("SEEL_IBMFL_PYTHON" in line for line in ibmfl)
    builtin = next(line for line in result.stdout.splitlines() if line.startswith("builtin"))
    assert "usable: ok" in builtin  # --python is the ibmfl engine's, never the built-in one's
    flower = next(line for line in lines if line.startswith("flower"))
    assert str(tmp_path / "no-python") not in flower  # nor Flower's: it runs in SEEL's Python


# -- seel init on IBM FL's example configs ---------------------------------------------------


def ibmfl_example_repo(root: Path) -> Path:
    """IBM FL's layout: examples/generate_configs.py writes paths relative to the repository."""
    from seel.ibmfl.make_files import write_files as make

    configs = root / "examples" / "configs" / "iter_avg" / "sklearn"
    configs.mkdir(parents=True)
    named = {
        "config_agg.yml": {"data/mnist.npz": "examples/datasets/mnist.npz"},
        "config_party0.yml": {
            "data/data_party0.npz": "examples/data/mnist/random/data_party0.npz",
            "model_definition: model_architecture.pickle":
                "model_definition: examples/configs/iter_avg/sklearn/model_architecture.pickle",
        },
        "config_party1.yml": {
            "data/data_party1.npz": "examples/data/mnist/random/data_party1.npz",
            "model_definition: model_architecture.pickle":
                "model_definition: examples/configs/iter_avg/sklearn/model_architecture.pickle",
        },
    }
    for name, swaps in named.items():
        text = (SHIPPED / name).read_text()
        for old, new in swaps.items():
            assert old in text
            text = text.replace(old, new)
        (configs / name).write_text(text)
    data = root / "examples" / "data" / "mnist" / "random"
    make(
        [str(root / "examples" / "datasets" / "mnist.npz")],
        [str(data / "data_party0.npz"), str(data / "data_party1.npz")],
        [str(configs / "model_architecture.pickle")],
        seed=0,
    )
    return configs


@pytest.mark.parametrize(("engine", "init_timeout"), [("ibmfl", "init: 120"), ("builtin", "init: 30")])
def test_init_on_ibmfl_examples_finds_the_root_and_writes_a_sweep_that_validates(
    tmp_path: Path, engine: str, init_timeout: str
) -> None:
    configs = ibmfl_example_repo(tmp_path / "federated-learning-lib")
    target = tmp_path / "sweep.yml"
    result = CliRunner().invoke(app, ["init", str(configs), "--engine", engine, "--out", str(target)])
    assert result.exit_code == 0, result.output
    text = target.read_text()
    assert "party[1].data.info.npz_file: {values: [../../../data/mnist/random/data_party1.npz]}" in text
    assert f"# timeouts: {{{init_timeout}," in text  # the engine's own timeouts
    plan = prepare(RunSettings(sweep=target))
    assert plan.engine.name == engine


def test_init_with_a_root_given_and_a_file_nowhere(tmp_path: Path) -> None:
    root = tmp_path / "federated-learning-lib"
    configs = ibmfl_example_repo(root)
    elsewhere = tmp_path / "configs"
    shutil.move(configs, elsewhere)  # the configs are no longer under the repository
    (root / "examples" / "datasets" / "mnist.npz").unlink()
    target = tmp_path / "sweep.yml"
    argv = ["init", str(elsewhere), "--engine", "ibmfl", "--root", str(root), "--out", str(target)]
    assert CliRunner().invoke(app, argv).exit_code == 0
    text = target.read_text()
    assert "# data.info.npz_file: examples/datasets/mnist.npz not found from" in text
    assert "party[0].data.info.npz_file: {values: [../federated-learning-lib/examples/data/" in text
