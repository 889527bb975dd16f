"""How parameter names and values are written for people, the same in every output."""

from __future__ import annotations

from typing import Any


def value_text(value: Any) -> str:
    """A parameter value: floats without trailing noise (0.95, not 0.9500000000000001)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def short_name(name: str) -> str:
    """A dotted parameter name's last part: `hyperparams.global.rounds` -> `rounds`."""
    return name.rsplit(".", 1)[-1]
