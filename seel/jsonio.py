"""How SEEL writes and reads JSON: one serialization for the ledger, `run --json` and `report --json`.

The policy for numbers that are not finite:

- Everything SEEL writes is strict JSON (RFC 8259): no `NaN` or `Infinity` tokens, which JSON does
  not have and which `jq`, JavaScript and most JSON libraries refuse.
- A non-finite float is a result, not an error (a diverging model prints `'loss': nan`), so it is
  never dropped and never turned into null: it is written as one of three strings, `"NaN"`,
  `"Infinity"` or `"-Infinity"` (the spelling of JavaScript and of the Protocol Buffers JSON
  mapping; Python's `float()` reads all three back).
- Null means that there is no value (no accuracy printed, a confidence interval of one trial), never
  a number that is not finite.
- Where the schema says a number (metrics, accuracies, durations), one of the three strings stands
  for that float: `number()` reads it back, and the results tables (`results.parquet`,
  `results.csv`) hold it as a float NaN or infinity. A string parameter value is never read as a
  number, even if it is spelled `"NaN"`.
- Reading also accepts the bare `NaN` and `Infinity` tokens that ledgers written before this policy
  may hold.

A value JSON has no type for (a date from YAML, a path) is written as its `str()`.
"""

from __future__ import annotations

import json
import math
from typing import Any

NAN = "NaN"
INFINITY = "Infinity"
NEG_INFINITY = "-Infinity"
_NON_FINITE = {NAN: math.nan, INFINITY: math.inf, NEG_INFINITY: -math.inf}


def _float_text(value: float) -> str:
    if math.isnan(value):
        return NAN
    return INFINITY if value > 0 else NEG_INFINITY


def _spelled(value: Any) -> Any:
    """`value` with every non-finite float replaced by its string (containers copied)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _float_text(value)
    if isinstance(value, dict):
        return {k: _spelled(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_spelled(v) for v in value]
    return value


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of `value`: one line (compact) unless `indent`; non-finite floats spelled."""
    separators = (",", ":") if indent is None else (",", ": ")
    try:
        return json.dumps(value, separators=separators, indent=indent, allow_nan=False, default=str)
    except ValueError:  # a non-finite float somewhere: rare, so the walk is paid only then
        return json.dumps(
            _spelled(value), separators=separators, indent=indent, allow_nan=False, default=str
        )


def loads(text: str | bytes) -> Any:
    """Parse JSON text. A spelled non-finite number stays a string until `number()` reads it; the
    bare `NaN`/`Infinity` tokens of older files are read as floats."""
    return json.loads(text)


def number(value: Any) -> Any:
    """A value the schema says is a number: `"NaN"`, `"Infinity"` and `"-Infinity"` become floats;
    anything else is returned as it is."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    return value
