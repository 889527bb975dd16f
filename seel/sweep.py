"""Sweep files: load one, apply command-line overrides, and check it against the user's configs.

The value grammar lives in `seel.grammar`, the search space in `seel.space`, the configs in
`seel.configs`; expanding a sweep into trials is `seel.grid` (or an optimizer).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seel import yamledit
from seel.configs import BaseConfigs
from seel.engine import PHASES
from seel.errors import SpecError
from seel.grammar import (
    COMMAND_LINE,
    Override,
    ValueSpecError,
    is_finite,
    is_number,
    parse_override,
    parse_value_spec,
)
from seel.partycount import (
    COUNT_PARAMETER,
    COUNT_TARGET,
    PartyCount,
    check_count,
    check_distribution,
)
from seel.ports import parse_port_range
from seel.space import Listed, Parameter, SearchSpace, Target, parse_target

_TOP_LEVEL_KEYS = (
    "name",
    "description",
    "engine",
    "configs",
    "parameters",
    "search",
    "repeats",
    "seed",
    "timeouts",
    "parallel",
    "port_range",
)
SEARCH = "search"


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep: its configs, search space, fixed overrides and run settings.

    `search` is the `search:` mapping as written (with `search.KEY=VALUE` overrides applied), or
    None for a grid; the adaptive search reads and checks it.
    """

    path: Path
    name: str
    description: str
    engine: str | dict[str, Any]
    configs: BaseConfigs
    space: SearchSpace
    fixed: tuple[tuple[str, Target, Any], ...]
    repeats: int
    seed: int
    timeouts: dict[str, float]
    parallel: int | None
    port_range: tuple[int, int] | None
    search: dict[str, Any] | None = None

    @property
    def aggregator_config(self) -> Path:
        return self.configs.aggregator_path

    @property
    def party_configs(self) -> tuple[Path, ...]:
        return self.configs.party_paths

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        return self.space.parameters

    @property
    def party_count(self) -> PartyCount:
        """How many parties its trials run (`parties.count`, else one per party config)."""
        return PartyCount.of(
            self.configs.n_parties,
            [(p.target, p.dist) for p in self.parameters],
            [(t, v) for _, t, v in self.fixed],
        )

    def trial_count(self) -> int:
        """Trials of the grid expansion: the product of the value counts, times repeats."""
        return self.space.grid_size() * self.repeats

    def fingerprint(self) -> str:
        """SHA-256 of everything that determines which trials run."""
        if self.search is None:
            parameters: list[Any] = [
                [p.name, _target_json(p.target), [_value_json(v) for v in p.values]]
                for p in self.parameters
            ]
        else:
            parameters = [
                [p.name, _target_json(p.target), p.dist.describe()] for p in self.parameters
            ]
        canonical: dict[str, Any] = {
            "aggregator_config": str(self.aggregator_config),
            "party_configs": [str(p) for p in self.party_configs],
            "parameters": parameters,
            "fixed": [[name, _target_json(t), _value_json(v)] for name, t, v in self.fixed],
            "repeats": self.repeats,
            "seed": self.seed,
        }
        if self.search is not None:
            canonical["search"] = self.search
        text = json.dumps(
            canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=repr
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _target_json(target: Target) -> list[Any]:
    return [target.process, target.party_index, target.path]


def _value_json(value: Any) -> list[Any]:
    """A value tagged with its type, so that 1, 1.0 and True stay distinct."""
    if isinstance(value, float):
        return ["float", repr(value)]
    return [type(value).__name__, value]


# ---------------------------------------------------------------------------------------------
# Settings


def _setting_repeats(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"must be an integer >= 1, not {value!r}")
    return value


def _setting_seed(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"must be an integer >= 0, not {value!r}")
    return value


def _setting_parallel(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"must be an integer >= 1, not {value!r}")
    return value


def _setting_port_range(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f'expected "A-B" such as "6000-6999", not {value!r}')
    return parse_port_range(value)


_SETTING_PARSERS: dict[str, Any] = {
    "repeats": _setting_repeats,
    "seed": _setting_seed,
    "parallel": _setting_parallel,
    "port_range": _setting_port_range,
}


def _timeouts(sweep: Path, raw: Any) -> dict[str, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(sweep, "timeouts", f"expected a mapping of phase to seconds, not {raw!r}")
    timeouts: dict[str, float] = {}
    for phase, seconds in raw.items():
        key = f"timeouts.{phase}"
        if phase not in PHASES:
            raise SpecError(sweep, key, f"unknown phase; expected one of {', '.join(PHASES)}")
        if not is_number(seconds) or not is_finite(seconds) or seconds <= 0:
            raise SpecError(sweep, key, f"must be a number of seconds > 0, not {seconds!r}")
        timeouts[phase] = float(seconds)
    return timeouts


def _absolute(path: Path) -> Path:
    return Path(os.path.normpath(path.absolute()))


def _config_paths(sweep: Path, raw: Any) -> tuple[Path, tuple[Path, ...]]:
    if raw is None:
        raise SpecError(sweep, "configs", "missing: give configs.aggregator and configs.parties")
    if not isinstance(raw, dict):
        raise SpecError(sweep, "configs", "expected a mapping with aggregator and parties")
    for key in raw:
        if key not in ("aggregator", "parties"):
            raise SpecError(sweep, f"configs.{key}", "unknown key")
    base = sweep.parent
    aggregator = raw.get("aggregator")
    if aggregator is None:
        raise SpecError(sweep, "configs.aggregator", "missing")
    if not isinstance(aggregator, str) or not aggregator.strip():
        raise SpecError(sweep, "configs.aggregator", "expected a file path")
    parties = raw.get("parties")
    if parties is None or parties == []:
        raise SpecError(sweep, "configs.parties", "empty: list at least one party config")
    if not isinstance(parties, list):
        raise SpecError(sweep, "configs.parties", "expected a list of file paths")
    party_paths: list[Path] = []
    for i, party in enumerate(parties):
        if not isinstance(party, str) or not party.strip():
            raise SpecError(sweep, f"configs.parties[{i}]", "expected a file path")
        party_paths.append(_absolute(base / party))
    aggregator_path = _absolute(base / aggregator)
    named = [("configs.aggregator", aggregator_path)]
    named += [(f"configs.parties[{i}]", p) for i, p in enumerate(party_paths)]
    for key, config in named:
        if not config.is_file():
            why = "is not a file" if config.exists() else "file not found"
            raise SpecError(sweep, key, f"{config}: {why}")
    return aggregator_path, tuple(party_paths)


# ---------------------------------------------------------------------------------------------
# Loading


def _header(sweep: Path, raw: dict[str, Any]) -> tuple[str, str, str | dict[str, Any]]:
    """The sweep's name, description and engine."""
    name = raw.get("name", sweep.stem)
    if not isinstance(name, str) or not name.strip():
        raise SpecError(sweep, "name", f"expected a non-empty string, not {name!r}")
    if "name" in raw and ("/" in name or not name.isprintable()):
        raise SpecError(
            sweep,
            "name",
            f"names the run directory: expected no '/' or control characters in {name!r}",
        )
    description = raw.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise SpecError(sweep, "description", "expected text")
    engine = raw.get("engine", "builtin")
    if not (isinstance(engine, str) and engine.strip()) and not isinstance(engine, dict):
        raise SpecError(sweep, "engine", "expected an engine name or an engine definition")
    return name, description, engine


def _search(sweep: Path, raw: Any, overrides: list[Override]) -> dict[str, Any] | None:
    """The `search:` mapping with `search.KEY=VALUE` overrides set in it (None: a grid)."""
    if raw is None and not overrides:
        return None
    if raw is not None and not isinstance(raw, dict):
        raise SpecError(sweep, SEARCH, "expected a mapping (sampler, trials, objective, ...)")
    search: dict[str, Any] = dict(raw or {})
    for override in overrides:
        if override.swept:
            raise SpecError(COMMAND_LINE, override.key, "takes a single value")
        *parents, leaf = override.key.split(".")[1:] or [""]
        node = search
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(COMMAND_LINE, override.key, f"{part} is not a mapping")
            node = child
        if not leaf:
            raise SpecError(COMMAND_LINE, override.key, "expected search.KEY=VALUE")
        node[leaf] = override.values[0]
    return search


def _target(name: str) -> Target:
    """A parameter name's target; party indexes are checked once the counts are known."""
    return COUNT_TARGET if name == COUNT_PARAMETER else parse_target(name, None)


def _parameters(
    sweep: Path, raw: Any, *, grid: bool
) -> tuple[list[Parameter], dict[str, tuple[object, str]]]:
    """The `parameters:` mapping, and where each one was written (for error messages)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(sweep, "parameters", "expected a mapping of parameter name to values")
    parameters: list[Parameter] = []
    for param_name, value_spec in raw.items():
        key = f"parameters.{param_name}"
        if not isinstance(param_name, str):
            raise SpecError(sweep, key, "parameter names must be strings")
        try:
            target = _target(param_name)
        except ValueError as exc:
            raise SpecError(sweep, key, str(exc)) from None
        try:
            dist = parse_value_spec(value_spec, grid=grid)
        except ValueSpecError as exc:
            field_key = key if exc.field is None else f"{key}.{exc.field}"
            raise SpecError(sweep, field_key, exc.why) from None
        if target == COUNT_TARGET:
            try:
                check_distribution(dist)
            except ValueError as exc:
                raise SpecError(sweep, key, str(exc)) from None
        parameters.append(Parameter(param_name, target, dist))
    origin: dict[str, tuple[object, str]] = {
        p.name: (sweep, f"parameters.{p.name}") for p in parameters
    }
    return parameters, origin


def _apply_key_overrides(
    overrides: list[Override],
    parameters: list[Parameter],
    origin: dict[str, tuple[object, str]],
) -> list[tuple[str, Target, Any]]:
    """Command-line KEY=... overrides: a swept one replaces or adds a parameter, a fixed one
    replaces a parameter of the same target. Returns the fixed ones."""
    fixed: list[tuple[str, Target, Any]] = []
    for override in overrides:
        key = override.key
        try:
            target = _target(key)
            if target == COUNT_TARGET:
                for value in override.values:
                    check_count(value)
        except ValueError as exc:
            raise SpecError(COMMAND_LINE, key, str(exc)) from None
        existing = next((i for i, p in enumerate(parameters) if p.target == target), None)
        if override.swept:
            replacement = Parameter(key, target, Listed(override.values))
            if existing is None:
                parameters.append(replacement)
            else:
                parameters[existing] = replacement
            origin[key] = (COMMAND_LINE, key)
        else:
            if existing is not None:
                del parameters[existing]
            fixed.append((key, target, override.values[0]))
    return fixed


def _check_against_configs(
    configs: BaseConfigs,
    parameters: Sequence[Parameter],
    origin: dict[str, tuple[object, str]],
    fixed: Sequence[tuple[str, Target, Any]],
) -> None:
    """Every party index names a party of every trial, every key exists and takes its values; no
    two entries write the same key."""
    count = PartyCount.of(
        configs.n_parties, [(p.target, p.dist) for p in parameters], [(t, v) for _, t, v in fixed]
    )
    indexed = [(*origin[p.name], p.target) for p in parameters]
    indexed += [(COMMAND_LINE, name, target) for name, target, _ in fixed]
    for file, key, target in indexed:
        problem = None if target.party_index is None else count.index_problem(target.party_index)
        if problem is not None:
            raise SpecError(file, key, problem)
    for parameter in parameters:
        file, key = origin[parameter.name]
        try:
            configs.check(parameter.target, parameter.probe_values())
        except ValueError as exc:
            raise SpecError(file, key, str(exc)) from None
    for fixed_name, target, value in fixed:
        try:
            configs.check(target, [value])
        except ValueError as exc:
            raise SpecError(COMMAND_LINE, fixed_name, str(exc)) from None
    entries: list[tuple[object, str, Target]] = [
        (*origin[p.name], p.target) for p in parameters
    ] + [(COMMAND_LINE, n, t) for n, t, _ in fixed]
    for i, (file, key, target) in enumerate(entries):
        for other_file, other_key, other_target in entries[:i]:
            if target.overlaps(other_target):
                where = other_key if other_file == file else f"{other_key} in {other_file}"
                raise SpecError(file, key, f"sets the same key as {where}")


def load_sweep(path: Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Load a sweep file, apply command-line overrides and check everything."""
    sweep = _absolute(path)
    raw = yamledit.to_plain(yamledit.load_roundtrip(sweep))
    for key in raw:
        if key not in _TOP_LEVEL_KEYS:
            raise SpecError(sweep, str(key), "unknown key")
    name, description, engine = _header(sweep, raw)

    parsed: list[Override] = []
    seen: set[str] = set()
    for text in overrides:
        override = parse_override(text)
        if override.key in seen:
            raise SpecError(COMMAND_LINE, override.key, "given more than once")
        seen.add(override.key)
        parsed.append(override)

    settings: dict[str, Any] = {"repeats": 1, "seed": 0, "parallel": None, "port_range": None}
    for key, parse in _SETTING_PARSERS.items():
        if key in raw:
            try:
                settings[key] = parse(raw[key])
            except ValueError as exc:
                raise SpecError(sweep, key, str(exc)) from None
    for override in parsed:
        if override.key in _SETTING_PARSERS:
            if override.swept:
                raise SpecError(COMMAND_LINE, override.key, "takes a single value")
            try:
                settings[override.key] = _SETTING_PARSERS[override.key](override.values[0])
            except ValueError as exc:
                raise SpecError(COMMAND_LINE, override.key, str(exc)) from None
    search = _search(
        sweep,
        raw.get(SEARCH),
        [o for o in parsed if o.key == SEARCH or o.key.startswith(f"{SEARCH}.")],
    )
    timeouts = _timeouts(sweep, raw.get("timeouts"))
    configs = BaseConfigs.load(*_config_paths(sweep, raw.get("configs")))

    parameters, origin = _parameters(sweep, raw.get("parameters"), grid=search is None)
    key_overrides = [
        o
        for o in parsed
        if o.key not in _SETTING_PARSERS and o.key != SEARCH and not o.key.startswith(f"{SEARCH}.")
    ]
    fixed = _apply_key_overrides(key_overrides, parameters, origin)
    _check_against_configs(configs, parameters, origin, fixed)

    return SweepSpec(
        path=sweep,
        name=name,
        description=description,
        engine=engine,
        configs=configs,
        space=SearchSpace(tuple(parameters)),
        fixed=tuple(fixed),
        repeats=settings["repeats"],
        seed=settings["seed"],
        timeouts=timeouts,
        parallel=settings["parallel"],
        port_range=settings["port_range"],
        search=search,
    )
