"""How parameter names and values are written for people, the same in every output."""

from __future__ import annotations

from typing import Any


def value_text(value: Any) -> str:
    """A parameter value: floats without trailing noise (0.95, not 0.9500000000000001)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def cell_text(value: Any) -> str:
    """A table cell: a float to 4 significant digits (nan and inf as such: they are results),
    no value as a dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def params_text(params: dict[str, Any]) -> str:
    """A configuration on one line: `lr=0.1 rounds=4`."""
    return " ".join(f"{short_name(k)}={value_text(v)}" for k, v in params.items())


def short_name(name: str) -> str:
    """A dotted parameter name's last part: `hyperparams.global.rounds` -> `rounds`."""
    return name.rsplit(".", 1)[-1]
