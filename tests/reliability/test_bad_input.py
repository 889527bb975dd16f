"""Bad input to the real `seel run`: one line on stderr naming the file and the key, exit code 2,
and nothing started.

Nothing started is checked three ways. The sweep's engine extends the built-in one but starts a
tripwire, a command that creates a file, so any process SEEL spawned leaves a mark. The project
directory, where the default run directory and the port registry would go, is byte-for-byte as
it was. And stdout is empty. A control run of the same sweep, unbroken, shows the tripwire and
the run directory do appear when the input is good.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.kit import assert_run_clean, proc_docs, spawned

ROOT = Path(__file__).resolve().parents[2]
SEEL = Path(sys.executable).parent / "seel"
CONFIGS = ROOT / "sweeps" / "configs" / "builtin"
TRIPWIRE = "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()"


def tripwire_engine(mark: Path) -> dict[str, Any]:
    """The built-in engine with every command replaced by one that creates `mark`."""
    command = ["{python}", "-c", TRIPWIRE, str(mark), "{config}"]
    return {
        "extends": "builtin",
        "aggregator": {"command": command, "port_keys": ["connection.info.port"]},
        "party": {
            "command": command,
            "port_keys": ["connection.info.port"],
            "aggregator_port_keys": ["aggregator.port"],
        },
    }


@dataclass
class Project:
    """A sweep on copies of the shipped built-in configs, in a directory of its own."""

    root: Path
    sweep: dict[str, Any] = field(default_factory=dict)

    @property
    def mark(self) -> Path:
        return self.root / "spawned"

    @property
    def sweep_file(self) -> Path:
        return self.root / "sweep.yml"

    def config(self, name: str) -> Path:
        return self.root / "configs" / name

    def write(self, text: str | None = None) -> None:
        self.sweep_file.write_text(
            json.dumps(self.sweep, indent=2) if text is None else text, encoding="utf-8"
        )

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(self.root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(self.root.rglob("*"))
        }

    def seel_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SEEL_PORTS_DIR": str(self.root / "ports")}
        return subprocess.run(
            [str(SEEL), "run", str(self.sweep_file), *args],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def project(tmp_path: Path) -> Project:
    (tmp_path / "configs").mkdir()
    for config in CONFIGS.glob("*.yml"):
        shutil.copy(config, tmp_path / "configs" / config.name)
    proj = Project(tmp_path)
    proj.sweep = {
        "name": "bad-input",
        "engine": tripwire_engine(proj.mark),
        "configs": {
            "aggregator": "configs/config_agg.yml",
            "parties": ["configs/config_party0.yml", "configs/config_party1.yml"],
        },
        "parameters": {"hyperparams.global.rounds": {"values": [1, 2]}},
        "timeouts": {"init": 10},
    }
    proj.write()
    return proj


def test_control_good_input_starts_the_tripwire(project: Project) -> None:
    result = project.seel_run("--out", "run")
    assert "Traceback" not in result.stderr, result.stderr
    assert project.mark.exists(), result.stderr
    run_dir = project.root / "run"
    assert spawned(proc_docs(run_dir)), "no spawn in the process ledger"
    assert_run_clean(run_dir)


# A case breaks the good project, then lists texts the one line must hold; "{root}" stands for
# the project directory.
Breaker = Callable[[Project], None]


def set_parameter(key: str, spec: Any) -> Breaker:
    def apply(p: Project) -> None:
        p.sweep["parameters"] = {key: spec}
        p.write()

    return apply


def set_sweep_key(key: str, value: Any) -> Breaker:
    def apply(p: Project) -> None:
        p.sweep[key] = value
        p.write()

    return apply


def write_sweep_text(text: str) -> Breaker:
    return lambda p: p.write(text)


def write_config(name: str, text: str) -> Breaker:
    return lambda p: p.config(name).write_text(text, encoding="utf-8")


def set_party_config(index: int, path: str) -> Breaker:
    def apply(p: Project) -> None:
        p.sweep["configs"]["parties"][index] = path
        p.write()

    return apply


def both(*breakers: Breaker) -> Breaker:
    def apply(p: Project) -> None:
        for breaker in breakers:
            breaker(p)

    return apply


def config_text(name: str, old: str, new: str) -> Breaker:
    def apply(p: Project) -> None:
        text = p.config(name).read_text(encoding="utf-8")
        assert old in text
        p.config(name).write_text(text.replace(old, new), encoding="utf-8")

    return apply


SWEEP = "{root}/sweep.yml"
AGG = "{root}/configs/config_agg.yml"
ROUNDS = "parameters.hyperparams.global.rounds"

CASES: list[Any] = [
    pytest.param(
        write_sweep_text("configs: [unclosed\n"),
        (),
        [SWEEP, "malformed YAML at line 2, column 1"],
        id="malformed-yaml-in-sweep",
    ),
    pytest.param(
        write_config("config_party1.yml", "data:\n  info: {seed: 42\n"),
        (),
        ["{root}/configs/config_party1.yml", "malformed YAML at line"],
        id="malformed-yaml-in-config",
    ),
    pytest.param(
        set_party_config(1, "configs/config_party9.yml"),
        (),
        [SWEEP, "configs.parties[1]", "{root}/configs/config_party9.yml: file not found"],
        id="missing-config-file",
    ),
    pytest.param(
        set_parameter("hyperparams.global.roundz", {"values": [1]}),
        (),
        [SWEEP, "parameters.hyperparams.global.roundz", "no such key in", AGG],
        id="key-names-no-config-path",
    ),
    pytest.param(
        set_parameter("hyperparams.global.rounds", {"values": [2, "three"]}),
        (),
        [SWEEP, ROUNDS, "'three' is a string", AGG],
        id="value-of-wrong-type",
    ),
    pytest.param(
        set_parameter("hyperparams.global.rounds", {"min": 4, "max": 1, "step": 1}),
        (),
        [SWEEP, ROUNDS, "empty range"],
        id="empty-range",
    ),
    pytest.param(
        set_parameter("hyperparams.global.rounds", {"min": 1, "max": 4, "step": 0}),
        (),
        [SWEEP, f"{ROUNDS}.step", "step must be > 0"],
        id="zero-step",
    ),
    pytest.param(
        set_parameter("hyperparams.global.rounds", {"min": 1, "max": 4, "step": -1}),
        (),
        [SWEEP, f"{ROUNDS}.step", "step must be > 0"],
        id="negative-step",
    ),
    pytest.param(
        set_sweep_key("paralel", 2),
        (),
        [SWEEP, "paralel", "unknown key"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        set_parameter("hyperparams.global.perc_quorum", {"values": [0.5, 1.5]}),
        (),
        [SWEEP, "parameters.hyperparams.global.perc_quorum", "value 1.5", "must be in (0, 1]"],
        id="value-the-engine-refuses",
    ),
    pytest.param(
        both(
            config_text("config_agg.yml", "max_timeout: 60 ", "max_timeout: 60.5"),
            set_parameter("hyperparams.global.max_timeout", {"values": [30.0, "NAN"]}),
            lambda p: p.write(p.sweep_file.read_text().replace('"NAN"', ".nan")),
        ),
        (),
        [SWEEP, "parameters.hyperparams.global.max_timeout", "value nan"],
        id="nan-seconds",
    ),
    pytest.param(
        set_parameter("hyperparams.global.rounds", {"min": 1, "max": 10**400, "step": 1}),
        (),
        [SWEEP, f"{ROUNDS}.max", "must be a finite number"],
        id="number-beyond-float",
    ),
    pytest.param(
        write_sweep_text("configs: {aggregator: configs/config_agg.yml}\nrepeats: !!int two\n"),
        (),
        [SWEEP, "malformed YAML", "'two'"],
        id="unreadable-tagged-value",
    ),
    pytest.param(
        write_sweep_text('"line\\nbreak": 1\n'),
        (),
        [SWEEP, "line\\nbreak", "unknown key"],
        id="line-break-in-key",
    ),
    pytest.param(
        set_sweep_key("name", "../../elsewhere"),
        (),
        [SWEEP, "name", "run directory"],
        id="name-that-is-a-path",
    ),
    pytest.param(
        None,
        ("hyperparams.global.rounds=range(1,5,0)",),
        ["command line", "hyperparams.global.rounds", "step must not be 0"],
        id="override-zero-step",
    ),
    pytest.param(
        None,
        ("hyperparams.global.rounds=range(5,1)",),
        ["command line", "hyperparams.global.rounds", "empty range"],
        id="override-empty-range",
    ),
    pytest.param(
        None,
        ("hyperparams.global.roundz=3",),
        ["command line", "hyperparams.global.roundz", "no such key in", AGG],
        id="override-key-names-no-config-path",
    ),
    pytest.param(
        None,
        ("hyperparams.global.rounds=three",),
        ["command line", "hyperparams.global.rounds", "'three' is a string"],
        id="override-value-of-wrong-type",
    ),
    pytest.param(
        None,
        ("hyperparams.global.rounds",),
        ["command line", "hyperparams.global.rounds", "expected KEY=VALUE"],
        id="override-without-value",
    ),
    pytest.param(
        None,
        ("~hyperparams.global.rounds",),
        ["command line", "~hyperparams.global.rounds", "expected KEY=VALUE"],
        id="override-hydra-delete",
    ),
    pytest.param(
        None,
        ("hyperparams.local.optimizer.lr='0.1",),
        ["command line", "hyperparams.local.optimizer.lr", "unterminated quote"],
        id="override-unterminated-quote",
    ),
    pytest.param(
        None,
        ("party[5].data.info.alpha=0.1",),
        ["command line", "party[5].data.info.alpha", "out of range"],
        id="override-party-index-out-of-range",
    ),
    pytest.param(
        None,
        ("hyperparams.global.rounds=range(1" + "0" * 400 + ",2)",),
        ["command line", "hyperparams.global.rounds", "finite numbers"],
        id="override-number-beyond-float",
    ),
]


def engine_case(key: str, value: Any) -> Any:
    """A sweep whose own engine definition has a bad `key`."""

    def apply(p: Project) -> None:
        p.sweep["engine"][key] = value
        p.write()

    return pytest.param(apply, (), [SWEEP, f"engine.{key}"], id=f"engine-{key}")


ENGINE_CASES = [
    engine_case("stop", {"grace_s": "soon"}),
    engine_case("timeouts", {"train": 10**400}),
    engine_case("validate", "no_such_module:check"),
    engine_case("aggregator", {"command": ["x"], "port_keys": ["connection..port"]}),
]


@pytest.mark.parametrize(("breaker", "overrides", "named"), [*CASES, *ENGINE_CASES])
def test_bad_input_is_one_line_exit_2_and_starts_nothing(
    project: Project, breaker: Breaker | None, overrides: tuple[str, ...], named: list[str]
) -> None:
    if breaker is not None:
        breaker(project)
    before = project.snapshot()

    result = project.seel_run(*overrides)

    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("seel: "), lines
    for text in named:
        assert text.replace("{root}", str(project.root)) in lines[0], (text, lines[0])
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert not project.mark.exists(), "a process was started"
    assert project.snapshot() == before, "the run created or changed files"
