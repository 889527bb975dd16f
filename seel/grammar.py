"""The value grammar of sweep files and command lines: value specs, scalars and overrides.

A value spec is `{min, max, step}`, `{values: [...]}` or `{random, low, high[, count, seed]}`;
it becomes a distribution of `seel.space`. An override is `KEY=VALUE` (fixes a key),
`KEY=V1,V2,...` or `KEY=range(START,STOP[,STEP])` (sweeps it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from seel import yamledit
from seel.errors import SpecError
from seel.space import Distribution, Drawn, Listed, Stepped, check_count, progression

COMMAND_LINE = "command line"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_RANGE_FIELDS = ("min", "max", "step")
_VALUES_FIELDS = ("values",)
_RANDOM_FIELDS = ("random", "low", "high", "count", "seed")
_RANDOM_KINDS = ("uniform", "loguniform", "int")
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


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite(value: int | float) -> bool:
    """Whether a number is finite as a float; an int too large for a float is not."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def describe(value: Any) -> str:
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


def _number_field(raw: Mapping[str, Any], field: str) -> int | float:
    """A finite number from a value spec; raises ValueSpecError naming the field."""
    if field not in raw:
        raise ValueSpecError(field, "missing")
    value = raw[field]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueSpecError(field, f"must be a number, not {describe(value)} ({value!r})")
    if not is_finite(value):
        raise ValueSpecError(field, f"must be a finite number, not {value!r}")
    return value


def _int_field(raw: Mapping[str, Any], field: str, minimum: int) -> int:
    if field not in raw:
        raise ValueSpecError(field, "missing")
    value = raw[field]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueSpecError(field, f"must be an integer, not {describe(value)} ({value!r})")
    if value < minimum:
        raise ValueSpecError(field, f"must be >= {minimum}, not {value}")
    return value


class ValueSpecError(ValueError):
    """A problem with a value spec; ``field`` names the offending field, or None for the whole."""

    def __init__(self, field: str | None, why: str) -> None:
        super().__init__(why)
        self.field = field
        self.why = why


def _range_dist(raw: Mapping[str, Any]) -> Stepped:
    low = _number_field(raw, "min")
    high = _number_field(raw, "max")
    step = _number_field(raw, "step")
    if step <= 0:
        raise ValueSpecError("step", "step must be > 0")
    if low > high:
        raise ValueSpecError(None, "empty range: min > max")
    dist = Stepped(low, high, step)
    try:
        dist.grid_values()  # the count and the float resolution are checked here, once
    except ValueError as exc:
        raise ValueSpecError(None, str(exc)) from None
    return dist


def _listed_dist(raw: Mapping[str, Any]) -> Listed:
    values = raw["values"]
    if not isinstance(values, list):
        raise ValueSpecError("values", f"must be a list, not {describe(values)}")
    if not values:
        raise ValueSpecError("values", "empty list: give at least one value")
    for i, value in enumerate(values):
        if not is_scalar(value):
            raise ValueSpecError("values", f"item {i} is {describe(value)}; values must be scalars")
    return Listed(tuple(values))


def _random_dist(raw: Mapping[str, Any], *, grid: bool) -> Drawn:
    kind = raw.get("random")
    if kind not in _RANDOM_KINDS:
        raise ValueSpecError("random", f"must be one of {', '.join(_RANDOM_KINDS)}, not {kind!r}")
    low = _number_field(raw, "low")
    high = _number_field(raw, "high")
    count = _int_field(raw, "count", 1) if grid or "count" in raw else None
    seed = _int_field(raw, "seed", 0) if grid or "seed" in raw else None
    if low >= high:
        raise ValueSpecError(None, "empty range: low must be < high")
    if count is not None:
        try:
            check_count(count)
        except ValueError as exc:
            raise ValueSpecError("count", str(exc)) from None
    if kind == "int":
        for field, bound in (("low", low), ("high", high)):
            if not isinstance(bound, int):
                raise ValueSpecError(field, f"must be an integer for random: int, not {bound!r}")
            if not _INT64_MIN <= bound <= _INT64_MAX:
                raise ValueSpecError(field, f"must fit in 64 bits for random: int, not {bound}")
    elif kind == "loguniform":
        if low <= 0:
            raise ValueSpecError("low", "must be > 0 for random: loguniform")
    elif not math.isfinite(high - low):
        raise ValueSpecError(None, "high - low is too large for a float")
    return Drawn(kind, low, high, count, seed)


def parse_value_spec(raw: Any, *, grid: bool = True) -> Distribution:
    """One value spec as a distribution: {min, max, step}, {values: [...]} or {random, ...}.

    For a grid, a random draw needs `count` and `seed`; for a search they are optional.
    """
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
        return _listed_dist(raw)
    if any(f in raw for f in _RANDOM_FIELDS):
        if "random" not in raw:
            raise ValueSpecError("random", f"missing: one of {', '.join(_RANDOM_KINDS)}")
        return _random_dist(raw, grid=grid)
    return _range_dist(raw)


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
        if not is_number(value) or not is_finite(value):
            raise ValueError(f"range() takes finite numbers, not {part!r}")
        numbers.append(value)
    start, stop = numbers[0], numbers[1]
    step: int | float = numbers[2] if len(numbers) == 3 else 1
    if step == 0:
        raise ValueError("range() step must not be 0")
    if (step > 0 and start >= stop) or (step < 0 and start <= stop):
        raise ValueError(f"empty range: range({args_text})")
    return progression(start, stop, step, inclusive=False)


@dataclass(frozen=True)
class Override:
    key: str
    values: tuple[Any, ...]
    swept: bool


def parse_override(text: str) -> Override:
    """Parse KEY=VALUE, KEY=V1,V2,... or KEY=range(START,STOP[,STEP])."""
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(COMMAND_LINE, text, "expected KEY=VALUE")
    try:
        stripped = value_text.strip()
        match = _RANGE_CALL.fullmatch(stripped)
        if match is not None:
            return Override(key, _override_range(match.group(1)), swept=True)
        items = _split_list(value_text)
        if len(items) == 1:
            return Override(key, (parse_scalar(items[0]),), swept=False)
        if any(not item.strip() for item in items):
            raise ValueError("empty value in the comma-separated list")
        return Override(key, tuple(parse_scalar(item) for item in items), swept=True)
    except ValueError as exc:
        raise SpecError(COMMAND_LINE, key, str(exc)) from None
