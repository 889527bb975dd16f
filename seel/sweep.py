"""Sweep files: load and validate them, apply command-line overrides, and expand the trials."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, localcontext
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from seel import yamledit
from seel.errors import SpecError

COMMAND_LINE = "command line"
PHASES = ("init", "start", "register", "train", "eval", "stop")
MAX_VALUES_PER_PARAMETER = 1_000_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EXACT_DIGITS = 1000

_TOP_LEVEL_KEYS = (
    "name",
    "description",
    "engine",
    "configs",
    "parameters",
    "repeats",
    "seed",
    "timeouts",
    "parallel",
    "port_range",
)
_SETTINGS = ("repeats", "seed", "parallel", "port_range")
_RANGE_FIELDS = ("min", "max", "step")
_VALUES_FIELDS = ("values",)
_RANDOM_FIELDS = ("random", "low", "high", "count", "seed")
_RANDOM_KINDS = ("uniform", "loguniform", "int")
_PARTY_INDEXED = re.compile(r"party\[([^\]]*)\]\.(.*)", re.DOTALL)
_PORT_RANGE = re.compile(r"\s*([0-9]+)\s*-\s*([0-9]+)\s*")
_RANGE_CALL = re.compile(r"range\((.*)\)", re.DOTALL)
_NULL = re.compile(r"~|null|Null|NULL")
_TRUE = re.compile(r"true|True|TRUE")
_FALSE = re.compile(r"false|False|FALSE")
_INT = re.compile(r"[-+]?[0-9]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_OCT = re.compile(r"0o[0-7]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")


@dataclass(frozen=True)
class Target:
    """Where a parameter lands: the aggregator config, every party config, or one party config."""

    process: Literal["aggregator", "party"]
    party_index: int | None
    path: str

    def overlaps(self, other: Target) -> bool:
        """Whether both targets can set the same key in the same config."""
        if self.process != other.process or self.path != other.path:
            return False
        if self.party_index is None or other.party_index is None:
            return True
        return self.party_index == other.party_index


@dataclass(frozen=True)
class Parameter:
    """One swept parameter: its name as written, its target and its values in order."""

    name: str
    target: Target
    values: tuple[Any, ...]


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: configs, parameters, fixed overrides and run settings."""

    path: Path
    name: str
    description: str
    engine: str | dict[str, Any]
    aggregator_config: Path
    party_configs: tuple[Path, ...]
    parameters: tuple[Parameter, ...]
    fixed: tuple[tuple[str, Target, Any], ...]
    repeats: int
    seed: int
    timeouts: dict[str, float]
    parallel: int | None
    port_range: tuple[int, int] | None

    def trial_count(self) -> int:
        """Number of trials: the product of the parameters' value counts, times repeats."""
        return math.prod(len(p.values) for p in self.parameters) * self.repeats

    def fingerprint(self) -> str:
        """SHA-256 of everything that determines the trial list."""
        canonical = {
            "aggregator_config": str(self.aggregator_config),
            "party_configs": [str(p) for p in self.party_configs],
            "parameters": [
                [p.name, _target_json(p.target), [_value_json(v) for v in p.values]]
                for p in self.parameters
            ],
            "fixed": [[name, _target_json(t), _value_json(v)] for name, t, v in self.fixed],
            "repeats": self.repeats,
            "seed": self.seed,
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TrialSpec:
    """One trial of a sweep: its id, position, parameter values, repeat and seed."""

    trial_id: str
    index: int
    params: dict[str, Any]
    repeat: int
    seed: int


def _target_json(target: Target) -> list[Any]:
    return [target.process, target.party_index, target.path]


def _value_json(value: Any) -> list[Any]:
    """A value tagged with its type, so that 1, 1.0 and True stay distinct."""
    if isinstance(value, float):
        return ["float", repr(value)]
    return [type(value).__name__, value]


# ---------------------------------------------------------------------------------------------
# Targets and values


def parse_target(name: str, n_parties: int) -> Target:
    """Parse a parameter name into its target; ValueError says what is wrong."""
    if name == "party" or name.startswith("party["):
        match = _PARTY_INDEXED.fullmatch(name)
        if match is None:
            raise ValueError("expected party.<key> or party[<index>].<key>")
        index_text, path = match.groups()
        if not index_text.isascii() or not index_text.isdigit():
            raise ValueError(f"party index {index_text!r} is not a non-negative integer")
        index = int(index_text)
        if index >= n_parties:
            raise ValueError(
                f"party index {index} is out of range: there are {n_parties} party configs"
                f" (indexes 0 to {n_parties - 1})"
            )
        yamledit.parse_dotted(path)
        return Target("party", index, path)
    if name.startswith("party."):
        path = name.removeprefix("party.")
        yamledit.parse_dotted(path)
        return Target("party", None, path)
    yamledit.parse_dotted(name)
    return Target("aggregator", None, name)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_finite(value: int | float) -> bool:
    """Whether a number is finite as a float; an int too large for a float is not."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int):
        return "an int"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def type_mismatch(existing: Any, value: Any) -> str | None:
    """Why ``value`` cannot replace ``existing`` in a config, or None if it can."""
    if existing is None:
        return None
    if isinstance(existing, dict | list):
        return f"the config has {_describe(existing)} there; only scalar values can be set"
    if isinstance(existing, bool):
        ok = isinstance(value, bool)
    elif isinstance(existing, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(existing, float):
        ok = _is_number(value)
    elif isinstance(existing, str):
        ok = isinstance(value, str)
    else:
        ok = type(value) is type(existing)
    if ok:
        return None
    return (
        f"value {value!r} is {_describe(value)}, but the config has {_describe(existing)}"
        f" ({existing!r}) there"
    )


def _decimal(value: int | float) -> Decimal:
    return Decimal(str(value))


def _from_decimal(value: Decimal, as_int: bool) -> int | float:
    return int(value) if as_int else float(value)


def _check_count(count: int) -> None:
    if count > MAX_VALUES_PER_PARAMETER:
        raise ValueError(
            f"gives {count} values; at most {MAX_VALUES_PER_PARAMETER} are allowed per parameter"
        )


def _number_field(raw: Mapping[str, Any], field: str) -> int | float:
    """A finite number from a value spec; raises ValueSpecError naming the field."""
    if field not in raw:
        raise ValueSpecError(field, "missing")
    value = raw[field]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueSpecError(field, f"must be a number, not {_describe(value)} ({value!r})")
    if not _is_finite(value):
        raise ValueSpecError(field, f"must be a finite number, not {value!r}")
    return value


def _int_field(raw: Mapping[str, Any], field: str, minimum: int) -> int:
    if field not in raw:
        raise ValueSpecError(field, "missing")
    value = raw[field]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueSpecError(field, f"must be an integer, not {_describe(value)} ({value!r})")
    if value < minimum:
        raise ValueSpecError(field, f"must be >= {minimum}, not {value}")
    return value


class ValueSpecError(ValueError):
    """A problem with a value spec; ``field`` names the offending field, or None for the whole."""

    def __init__(self, field: str | None, why: str) -> None:
        super().__init__(why)
        self.field = field
        self.why = why


def _grid(
    start: int | float, stop: int | float, step: int | float, *, inclusive: bool
) -> tuple[Any, ...]:
    """Decimal-exact arithmetic progression from start towards stop (step may be negative)."""
    as_int = all(isinstance(x, int) for x in (start, stop, step))
    d_start, d_stop, d_step = _decimal(start), _decimal(stop), _decimal(step)
    # Every finite float and every int a float can hold is exact in 1000 digits; the default 28
    # would round 10**28 + 1.
    with localcontext(prec=_EXACT_DIGITS):
        steps = (d_stop - d_start) / d_step
        whole = int(steps.to_integral_value(rounding=ROUND_FLOOR))
        count = whole + 1 if inclusive or whole != steps else whole
        count = max(count, 0)
        _check_count(count)
        values = tuple(_from_decimal(d_start + i * d_step, as_int) for i in range(count))
    if any(a == b for a, b in itertools.pairwise(values)):
        raise ValueError("the step is below what a float can tell apart here: values repeat")
    return values


def _range_values(raw: Mapping[str, Any]) -> tuple[Any, ...]:
    low = _number_field(raw, "min")
    high = _number_field(raw, "max")
    step = _number_field(raw, "step")
    if step <= 0:
        raise ValueSpecError("step", "step must be > 0")
    if low > high:
        raise ValueSpecError(None, "empty range: min > max")
    try:
        return _grid(low, high, step, inclusive=True)
    except ValueError as exc:
        raise ValueSpecError(None, str(exc)) from None


def _listed_values(raw: Mapping[str, Any]) -> tuple[Any, ...]:
    values = raw["values"]
    if not isinstance(values, list):
        raise ValueSpecError("values", f"must be a list, not {_describe(values)}")
    if not values:
        raise ValueSpecError("values", "empty list: give at least one value")
    for i, value in enumerate(values):
        if not _is_scalar(value):
            raise ValueSpecError(
                "values", f"item {i} is {_describe(value)}; values must be scalars"
            )
    return tuple(values)


def _random_values(raw: Mapping[str, Any]) -> tuple[Any, ...]:
    kind = raw.get("random")
    if kind not in _RANDOM_KINDS:
        raise ValueSpecError("random", f"must be one of {', '.join(_RANDOM_KINDS)}, not {kind!r}")
    low = _number_field(raw, "low")
    high = _number_field(raw, "high")
    count = _int_field(raw, "count", 1)
    seed = _int_field(raw, "seed", 0)
    if low >= high:
        raise ValueSpecError(None, "empty range: low must be < high")
    try:
        _check_count(count)
    except ValueError as exc:
        raise ValueSpecError("count", str(exc)) from None
    rng = np.random.default_rng(seed)
    if kind == "int":
        for field, bound in (("low", low), ("high", high)):
            if not isinstance(bound, int):
                raise ValueSpecError(field, f"must be an integer for random: int, not {bound!r}")
            if not _INT64_MIN <= bound <= _INT64_MAX:
                raise ValueSpecError(field, f"must fit in 64 bits for random: int, not {bound}")
        draws = rng.integers(int(low), int(high), size=count, endpoint=True)
        return tuple(int(x) for x in draws)
    if kind == "loguniform":
        if low <= 0:
            raise ValueSpecError("low", "must be > 0 for random: loguniform")
        logs = rng.uniform(math.log(low), math.log(high), size=count)
        return tuple(min(max(float(math.exp(x)), low), high) for x in logs)
    if not math.isfinite(high - low):
        raise ValueSpecError(None, "high - low is too large for a float")
    return tuple(float(x) for x in rng.uniform(low, high, size=count))


def parse_value_spec(raw: Any) -> tuple[Any, ...]:
    """Expand one value spec: {min, max, step}, {values: [...]} or {random, ...}."""
    if not isinstance(raw, dict):
        raise ValueSpecError(
            None,
            "expected a mapping: {min, max, step}, {values: [...]}"
            " or {random, low, high, count, seed}",
        )
    known = set(_RANGE_FIELDS) | set(_VALUES_FIELDS) | set(_RANDOM_FIELDS)
    for field in raw:
        if field not in known:
            raise ValueSpecError(str(field), "unknown field")
    forms = [
        label
        for label, fields in (
            ("{min, max, step}", _RANGE_FIELDS),
            ("{values}", _VALUES_FIELDS),
            ("{random, low, high, count, seed}", _RANDOM_FIELDS),
        )
        if any(f in raw for f in fields)
    ]
    if len(forms) > 1:
        raise ValueSpecError(None, f"mixes the forms {' and '.join(forms)}; use one")
    if not forms:
        raise ValueSpecError(
            None, "empty; expected {min, max, step}, {values: [...]} or {random, ...}"
        )
    if "values" in raw:
        return _listed_values(raw)
    if "random" in raw or any(f in raw for f in _RANDOM_FIELDS):
        if "random" not in raw:
            raise ValueSpecError("random", f"missing: one of {', '.join(_RANDOM_KINDS)}")
        return _random_values(raw)
    return _range_values(raw)


# ---------------------------------------------------------------------------------------------
# Command-line overrides


def parse_scalar(text: str) -> Any:
    """Parse one YAML 1.2 plain or quoted scalar: 2, 0.5, true, null, 'a,b', or text."""
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
        doc = yamledit.to_plain(_load_yaml_value(stripped))
        if isinstance(doc, str):
            return doc
        raise ValueError(f"cannot parse the quoted value {stripped}")
    if _NULL.fullmatch(stripped):
        return None
    if _TRUE.fullmatch(stripped):
        return True
    if _FALSE.fullmatch(stripped):
        return False
    if _INT.fullmatch(stripped):
        return int(stripped)
    if _HEX.fullmatch(stripped):
        return int(stripped, 16)
    if _OCT.fullmatch(stripped):
        return int(stripped[2:], 8)
    if _FLOAT.fullmatch(stripped):
        return float(stripped)
    if _INF.fullmatch(stripped):
        return -math.inf if stripped.startswith("-") else math.inf
    if _NAN.fullmatch(stripped):
        return math.nan
    if stripped[:1] in ("[", "{"):
        raise ValueError("only scalar values can be set; for several values write KEY=V1,V2,...")
    return stripped


def _load_yaml_value(text: str) -> Any:
    try:
        return YAML(typ="safe", pure=True).load(f"v: {text}\n")["v"]
    except (YAMLError, TypeError, KeyError) as exc:
        raise ValueError(f"cannot parse the quoted value {text}") from exc


def _split_list(text: str) -> list[str]:
    """Split on commas that are not inside quotes."""
    items: list[str] = []
    current: list[str] = []
    quote: str | None = None
    for char in text:
        if quote is not None:
            current.append(char)
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if quote is not None:
        raise ValueError(f"unterminated quote in {text!r}")
    items.append("".join(current))
    return items


def _override_range(args_text: str) -> tuple[Any, ...]:
    """Values of range(START, STOP[, STEP]), STOP excluded, decimal-exact."""
    parts = [p.strip() for p in args_text.split(",")]
    if len(parts) not in (2, 3) or any(not p for p in parts):
        raise ValueError("expected range(START,STOP) or range(START,STOP,STEP)")
    numbers: list[int | float] = []
    for part in parts:
        value = parse_scalar(part)
        if not _is_number(value) or not _is_finite(value):
            raise ValueError(f"range() takes finite numbers, not {part!r}")
        numbers.append(value)
    start, stop = numbers[0], numbers[1]
    step: int | float = numbers[2] if len(numbers) == 3 else 1
    if step == 0:
        raise ValueError("range() step must not be 0")
    if (step > 0 and start >= stop) or (step < 0 and start <= stop):
        raise ValueError(f"empty range: range({args_text})")
    return _grid(start, stop, step, inclusive=False)


@dataclass(frozen=True)
class _Override:
    key: str
    values: tuple[Any, ...]
    swept: bool


def _parse_override(text: str) -> _Override:
    """Parse KEY=VALUE, KEY=V1,V2,... or KEY=range(START,STOP[,STEP])."""
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(COMMAND_LINE, text, "expected KEY=VALUE")
    try:
        stripped = value_text.strip()
        match = _RANGE_CALL.fullmatch(stripped)
        if match is not None:
            return _Override(key, _override_range(match.group(1)), swept=True)
        items = _split_list(value_text)
        if len(items) == 1:
            return _Override(key, (parse_scalar(items[0]),), swept=False)
        if any(not item.strip() for item in items):
            raise ValueError("empty value in the comma-separated list")
        return _Override(key, tuple(parse_scalar(item) for item in items), swept=True)
    except ValueError as exc:
        raise SpecError(COMMAND_LINE, key, str(exc)) from None


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
    match = _PORT_RANGE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'expected "A-B" such as "6000-6999", not {value!r}')
    first, last = int(match.group(1)), int(match.group(2))
    if not 1024 <= first <= last <= 65535:
        raise ValueError(f"expected 1024 <= A <= B <= 65535, not {first}-{last}")
    return first, last


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
        if not _is_number(seconds) or not _is_finite(seconds) or seconds <= 0:
            raise SpecError(sweep, key, f"must be a number of seconds > 0, not {seconds!r}")
        timeouts[phase] = float(seconds)
    return timeouts


def _absolute(path: Path) -> Path:
    return Path(os.path.normpath(path.absolute()))


def _configs(sweep: Path, raw: Any) -> tuple[Path, tuple[Path, ...]]:
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


def _check_against_configs(
    target: Target,
    values: Sequence[Any],
    aggregator: tuple[Path, Any],
    parties: Sequence[tuple[Path, Any]],
) -> None:
    """Check that the target key exists and takes each value; ValueError says why not."""
    if target.process == "aggregator":
        docs = [aggregator]
    elif target.party_index is None:
        docs = list(parties)
    else:
        docs = [parties[target.party_index]]
    for config_path, doc in docs:
        if not yamledit.has_path(doc, target.path):
            raise ValueError(f"no such key in {config_path}")
        existing = yamledit.to_plain(yamledit.get_path(doc, target.path))
        for value in values:
            why = type_mismatch(existing, value)
            if why is not None:
                raise ValueError(f"{why} in {config_path}")


def load_sweep(path: Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Load a sweep file, apply command-line overrides and validate everything."""
    sweep = _absolute(path)
    raw = yamledit.to_plain(yamledit.load_roundtrip(sweep))
    for key in raw:
        if key not in _TOP_LEVEL_KEYS:
            raise SpecError(sweep, str(key), "unknown key")

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

    settings: dict[str, Any] = {"repeats": 1, "seed": 0, "parallel": None, "port_range": None}
    for key in _SETTINGS:
        if key in raw:
            try:
                settings[key] = _SETTING_PARSERS[key](raw[key])
            except ValueError as exc:
                raise SpecError(sweep, key, str(exc)) from None
    timeouts = _timeouts(sweep, raw.get("timeouts"))
    aggregator_config, party_configs = _configs(sweep, raw.get("configs"))
    n_parties = len(party_configs)

    parameters: list[Parameter] = []
    raw_parameters = raw.get("parameters")
    if raw_parameters is None:
        raw_parameters = {}
    if not isinstance(raw_parameters, dict):
        raise SpecError(sweep, "parameters", "expected a mapping of parameter name to values")
    for param_name, value_spec in raw_parameters.items():
        key = f"parameters.{param_name}"
        if not isinstance(param_name, str):
            raise SpecError(sweep, key, "parameter names must be strings")
        try:
            target = parse_target(param_name, n_parties)
        except ValueError as exc:
            raise SpecError(sweep, key, str(exc)) from None
        try:
            values = parse_value_spec(value_spec)
        except ValueSpecError as exc:
            field_key = key if exc.field is None else f"{key}.{exc.field}"
            raise SpecError(sweep, field_key, exc.why) from None
        parameters.append(Parameter(param_name, target, values))

    # Overrides: origin records who introduced each parameter, for error messages.
    origin: dict[str, tuple[object, str]] = {
        p.name: (sweep, f"parameters.{p.name}") for p in parameters
    }
    fixed: list[tuple[str, Target, Any]] = []
    seen: set[str] = set()
    for text in overrides:
        override = _parse_override(text)
        key = override.key
        if key in seen:
            raise SpecError(COMMAND_LINE, key, "given more than once")
        seen.add(key)
        if key in _SETTINGS:
            if override.swept:
                raise SpecError(COMMAND_LINE, key, "takes a single value")
            try:
                settings[key] = _SETTING_PARSERS[key](override.values[0])
            except ValueError as exc:
                raise SpecError(COMMAND_LINE, key, str(exc)) from None
            continue
        try:
            target = parse_target(key, n_parties)
        except ValueError as exc:
            raise SpecError(COMMAND_LINE, key, str(exc)) from None
        existing = next((i for i, p in enumerate(parameters) if p.target == target), None)
        if override.swept:
            replacement = Parameter(key, target, override.values)
            if existing is None:
                parameters.append(replacement)
            else:
                parameters[existing] = replacement
            origin[key] = (COMMAND_LINE, key)
        else:
            if existing is not None:
                del parameters[existing]
            fixed.append((key, target, override.values[0]))

    # Validation against the base configs.
    aggregator_doc = yamledit.load_roundtrip(aggregator_config)
    party_docs = [(p, yamledit.load_roundtrip(p)) for p in party_configs]
    aggregator_entry = (aggregator_config, aggregator_doc)
    for parameter in parameters:
        file, key = origin[parameter.name]
        try:
            _check_against_configs(parameter.target, parameter.values, aggregator_entry, party_docs)
        except ValueError as exc:
            raise SpecError(file, key, str(exc)) from None
    for fixed_name, target, value in fixed:
        try:
            _check_against_configs(target, [value], aggregator_entry, party_docs)
        except ValueError as exc:
            raise SpecError(COMMAND_LINE, fixed_name, str(exc)) from None

    # Two entries must never write the same key of the same config.
    entries: list[tuple[object, str, Target]] = [
        (*origin[p.name], p.target) for p in parameters
    ] + [(COMMAND_LINE, n, t) for n, t, _ in fixed]
    for i, (file, key, target) in enumerate(entries):
        for other_file, other_key, other_target in entries[:i]:
            if target.overlaps(other_target):
                where = other_key if other_file == file else f"{other_key} in {other_file}"
                raise SpecError(file, key, f"sets the same key as {where}")

    return SweepSpec(
        path=sweep,
        name=name,
        description=description,
        engine=engine,
        aggregator_config=aggregator_config,
        party_configs=party_configs,
        parameters=tuple(parameters),
        fixed=tuple(fixed),
        repeats=settings["repeats"],
        seed=settings["seed"],
        timeouts=timeouts,
        parallel=settings["parallel"],
        port_range=settings["port_range"],
    )


# ---------------------------------------------------------------------------------------------
# Expansion


def _radices(spec: SweepSpec) -> list[int]:
    return [len(p.values) for p in spec.parameters] + [spec.repeats]


def _trial(spec: SweepSpec, index: int, digits: Sequence[int]) -> TrialSpec:
    params = {p.name: p.values[d] for p, d in zip(spec.parameters, digits, strict=False)}
    repeat = digits[-1]
    return TrialSpec(
        trial_id=f"t{index:05d}",
        index=index,
        params=params,
        repeat=repeat,
        seed=spec.seed + repeat,
    )


def _digits(spec: SweepSpec, index: int) -> list[int]:
    total = spec.trial_count()
    if not 0 <= index < total:
        raise IndexError(f"trial index {index} is out of range: the sweep has {total} trials")
    digits: list[int] = []
    rest = index
    for radix in reversed(_radices(spec)):
        rest, digit = divmod(rest, radix)
        digits.append(digit)
    digits.reverse()
    return digits


def trial_at(spec: SweepSpec, index: int) -> TrialSpec:
    """The trial at a position of the expansion, decoded directly."""
    return _trial(spec, index, _digits(spec, index))


def iter_trials(spec: SweepSpec, start: int = 0) -> Iterator[TrialSpec]:
    """Trials in order: first parameter slowest, repeats fastest, beginning at ``start``."""
    total = spec.trial_count()
    if start < 0:
        raise ValueError(f"start must be >= 0, not {start}")
    if start >= total:
        return
    radices = _radices(spec)
    digits = _digits(spec, start)
    for index in range(start, total):
        yield _trial(spec, index, digits)
        for position in reversed(range(len(digits))):
            digits[position] += 1
            if digits[position] < radices[position]:
                break
            digits[position] = 0
