"""`seel ibmfl data`: write the data and model files an IBM FL config directory names.

The configs are read with SEEL (here); the files are written by `make_files.py` run with IBM FL's
own Python, so the model pickle matches the scikit-learn that IBM FL loads it with. Paths are
resolved as IBM FL resolves them in a sweep: against the configs' directory.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from seel import yamledit
from seel.errors import SeelError, SpecError
from seel.starter import find_configs

DATA_KEY = "data.info.npz_file"
MODEL_KEY = "model.spec.model_definition"
SCRIPT = Path(__file__).with_name("make_files.py")


@dataclass(frozen=True)
class NamedFiles:
    """The files a config directory names: the aggregator's data, each party's data, models."""

    aggregator: tuple[Path, ...]
    parties: tuple[Path, ...]
    models: tuple[Path, ...]

    def all(self) -> tuple[Path, ...]:
        return (*self.aggregator, *self.parties, *self.models)


def _named(config: Path, key: str, base: Path) -> Path | None:
    doc = yamledit.load_roundtrip(config)
    if not yamledit.has_path(doc, key):
        return None
    value = yamledit.get_path(doc, key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SpecError(config, key, f"expected a file path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def named_files(config_dir: Path) -> NamedFiles:
    """The files the configs in `config_dir` name (config_agg.yml, config_party*.yml)."""
    agg, parties = find_configs(config_dir)
    base = config_dir.resolve()
    aggregator = _named(agg, DATA_KEY, base)
    party_data = [_named(p, DATA_KEY, base) for p in parties]
    models = [m for p in parties if (m := _named(p, MODEL_KEY, base)) is not None]
    return NamedFiles(
        aggregator=(aggregator,) if aggregator is not None else (),
        parties=tuple(p for p in party_data if p is not None),
        models=tuple(dict.fromkeys(models)),
    )


def write_command(python: str, files: NamedFiles, seed: int) -> list[str]:
    """The command that writes `files` with `python` (IBM FL's)."""
    argv = [python, str(SCRIPT), "--seed", str(seed)]
    for flag, paths in (
        ("--aggregator", files.aggregator),
        ("--party", files.parties),
        ("--model", files.models),
    ):
        for path in paths:
            argv += [flag, str(path)]
    return argv


def write_files(python: str, config_dir: Path, seed: int = 0) -> NamedFiles:
    """Write every file the configs in `config_dir` name; SeelError if the writer fails."""
    files = named_files(config_dir)
    if not files.all():
        raise SpecError(config_dir, DATA_KEY, "the configs name no data or model file")
    try:
        done = subprocess.run(
            write_command(python, files, seed), capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise SeelError(f"{python}: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise SeelError(f"{python} could not write the files: {last}")
    return files
