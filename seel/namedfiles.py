"""The files a sweep's configs name (data, model) exist before anything starts.

An engine lists, per process, the config keys that name files (`file_keys`). Each such key of
each config is checked with every value a trial can give it: the config's own, a fixed override,
and each swept value. A relative path is resolved where the engine's process will resolve it: a
key SEEL rewrites (`path_keys`) against the config's own directory, any other against the
process's working directory (the configs' directory for an engine with `cwd: config`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from seel import yamledit
from seel.engine import Engine, ProcessDef
from seel.errors import SpecError
from seel.grammar import COMMAND_LINE
from seel.space import Target
from seel.sweep import SweepSpec


def _targets(spec: SweepSpec, target: Target, index: int, *, every: bool) -> bool:
    """Whether a sweep target reaches config `index` (0: the aggregator, 1..: the parties): the
    config that party i of a trial is made from is i mod the number of configs. With `every`:
    whether it sets the key for every party made from that config."""
    if target.process == "aggregator":
        return index == 0
    if target.process != "party" or index == 0:
        return False
    if target.party_index is None:
        return True
    n_configs = spec.configs.n_parties
    if every:  # a config several parties are made from keeps its own value for the others
        return target.party_index == index - 1 and spec.party_count.largest <= n_configs
    return target.party_index % n_configs == index - 1


def _swept_values(
    spec: SweepSpec, key: str, index: int, *, every: bool = False
) -> Iterator[tuple[object, str, Any]]:
    """(file, key, value) of every swept or fixed value that a trial may put at `key`."""
    for name, target, value in spec.fixed:
        if target.path == key and _targets(spec, target, index, every=every):
            yield COMMAND_LINE, name, value  # fixed values come from the command line
    for param in spec.space.parameters:
        if param.target.path == key and _targets(spec, param.target, index, every=every):
            for value in param.dist.probe_values():
                yield spec.path, f"parameters.{param.name}", value


def _candidates(
    spec: SweepSpec, config: Path, doc: CommentedMap, key: str, index: int
) -> Iterator[tuple[object, str, Any]]:
    overridden = any(True for _ in _swept_values(spec, key, index, every=True))
    if not overridden and yamledit.has_path(doc, key):
        yield config, key, yamledit.get_path(doc, key)
    yield from _swept_values(spec, key, index)


def check_named_files(spec: SweepSpec, engine: Engine, docs: list[CommentedMap], cwd: Path) -> None:
    """SpecError naming the config file and key of the first named file that does not exist.

    `docs` are the aggregator's and the parties' configs in that order; `cwd` is where the
    engine's processes run from when it is the configs' directory.
    """
    configs = [spec.aggregator_config, *spec.party_configs]
    procs: list[ProcessDef] = [engine.aggregator] + [engine.party] * (len(docs) - 1)
    for index, (config, doc, proc) in enumerate(zip(configs, docs, procs, strict=True)):
        for key in proc.file_keys:
            for source, where, value in _candidates(spec, config, doc, key, index):
                if value is None:
                    continue  # the key is optional: the engine uses its default
                if not isinstance(value, str) or not value:
                    raise SpecError(source, where, f"expected a file path, got {value!r}")
                base = config.parent if key in proc.path_keys or engine.cwd != "config" else cwd
                path = Path(value).expanduser()
                resolved = path if path.is_absolute() else base / path
                if not resolved.is_file():
                    why = f"{value}: no such file ({resolved.resolve()})"
                    if engine.files_hint:
                        here = os.path.relpath(config.parent.resolve())
                        why += f"; {engine.files_hint.replace('{config_dir}', here)}"
                    raise SpecError(source, where, why)
