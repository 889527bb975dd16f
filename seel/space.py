"""The search space: each swept parameter, where it lands, and the distribution of its values.

A grid is one expansion of the space (`Distribution.grid_values`); an optimizer's sampler reads
the same distributions as ranges and choices. Nothing here reads files.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, localcontext
from functools import cached_property
from typing import Any, Literal

import numpy as np

from seel import yamledit

MAX_VALUES_PER_PARAMETER = 1_000_000
_EXACT_DIGITS = 1000
_PARTY_INDEXED = re.compile(r"party\[([^\]]*)\]\.(.*)", re.DOTALL)


@dataclass(frozen=True)
class Target:
    """Where a parameter lands: the aggregator config, every party config, one party's config, or
    a setting of the trial itself (`trial`: the number of parties)."""

    process: Literal["aggregator", "party", "trial"]
    party_index: int | None
    path: str

    def overlaps(self, other: Target) -> bool:
        """Whether both targets can set the same key in the same config."""
        if self.process != other.process or self.path != other.path:
            return False
        if self.party_index is None or other.party_index is None:
            return True
        return self.party_index == other.party_index


def parse_target(name: str, n_parties: int | None) -> Target:
    """Parse a parameter name into its target; ValueError says what is wrong.

    With `n_parties` None, a party index is not checked here (the caller checks it)."""
    if name == "party" or name.startswith("party["):
        match = _PARTY_INDEXED.fullmatch(name)
        if match is None:
            raise ValueError("expected party.<key> or party[<index>].<key>")
        index_text, path = match.groups()
        if not index_text.isascii() or not index_text.isdigit():
            raise ValueError(f"party index {index_text!r} is not a non-negative integer")
        index = int(index_text)
        if n_parties is not None and index >= n_parties:
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


def check_count(count: int) -> None:
    """ValueError if a parameter would have more values than a sweep allows."""
    if count > MAX_VALUES_PER_PARAMETER:
        raise ValueError(
            f"gives {count} values; at most {MAX_VALUES_PER_PARAMETER} are allowed per parameter"
        )


def progression(
    start: int | float, stop: int | float, step: int | float, *, inclusive: bool
) -> tuple[Any, ...]:
    """Decimal-exact arithmetic progression from start towards stop (step may be negative)."""
    as_int = all(isinstance(x, int) for x in (start, stop, step))
    d_start, d_stop, d_step = (Decimal(str(x)) for x in (start, stop, step))
    # Every finite float and every int a float can hold is exact in 1000 digits; the default 28
    # would round 10**28 + 1.
    with localcontext(prec=_EXACT_DIGITS):
        steps = (d_stop - d_start) / d_step
        whole = int(steps.to_integral_value(rounding=ROUND_FLOOR))
        count = whole + 1 if inclusive or whole != steps else whole
        count = max(count, 0)
        check_count(count)
        values = tuple(
            int(d_start + i * d_step) if as_int else float(d_start + i * d_step)
            for i in range(count)
        )
    if any(a == b for a, b in itertools.pairwise(values)):
        raise ValueError("the step is below what a float can tell apart here: values repeat")
    return values


@dataclass(frozen=True)
class Listed:
    """`{values: [...]}`: these values, in order (a categorical choice for an optimizer)."""

    values: tuple[Any, ...]

    def grid_values(self) -> tuple[Any, ...]:
        """The values a grid sweeps, in order."""
        return self.values

    def probe_values(self) -> tuple[Any, ...]:
        return self.values

    def describe(self) -> dict[str, Any]:
        return {"values": list(self.values)}


@dataclass(frozen=True)
class Stepped:
    """`{min, max, step}`: an inclusive, decimal-exact range (an int range when all are ints)."""

    low: int | float
    high: int | float
    step: int | float

    @property
    def is_int(self) -> bool:
        return all(isinstance(x, int) for x in (self.low, self.high, self.step))

    @cached_property
    def _values(self) -> tuple[Any, ...]:
        return progression(self.low, self.high, self.step, inclusive=True)

    def grid_values(self) -> tuple[Any, ...]:
        return self._values

    def probe_values(self) -> tuple[Any, ...]:
        return self._values

    def describe(self) -> dict[str, Any]:
        return {"min": self.low, "max": self.high, "step": self.step}


@dataclass(frozen=True)
class Drawn:
    """`{random: uniform|loguniform|int, low, high}`: a draw from a range, bounds included.

    A grid needs `count` draws made from `seed`; an optimizer samples the range itself.
    """

    kind: Literal["uniform", "loguniform", "int"]
    low: int | float
    high: int | float
    count: int | None = None
    seed: int | None = None

    @cached_property
    def _values(self) -> tuple[Any, ...]:
        if self.count is None or self.seed is None:
            raise ValueError("a grid needs count and seed for a random draw")
        rng = np.random.default_rng(self.seed)
        low, high = self.low, self.high
        if self.kind == "int":
            draws = rng.integers(int(low), int(high), size=self.count, endpoint=True)
            return tuple(int(x) for x in draws)
        if self.kind == "loguniform":
            logs = rng.uniform(math.log(low), math.log(high), size=self.count)
            return tuple(min(max(float(math.exp(x)), low), high) for x in logs)
        return tuple(float(x) for x in rng.uniform(low, high, size=self.count))

    def grid_values(self) -> tuple[Any, ...]:
        return self._values

    def probe_values(self) -> tuple[Any, ...]:
        if self.count is not None and self.seed is not None:
            return self._values
        cast = int if self.kind == "int" else float
        return (cast(self.low), cast(self.high))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"random": self.kind, "low": self.low, "high": self.high}
        if self.count is not None:
            out["count"] = self.count
        if self.seed is not None:
            out["seed"] = self.seed
        return out


Distribution = Listed | Stepped | Drawn


@dataclass(frozen=True)
class Parameter:
    """One swept parameter: its name as written, its target and its distribution."""

    name: str
    target: Target
    dist: Distribution

    @property
    def values(self) -> tuple[Any, ...]:
        """The values a grid sweeps, in order."""
        return self.dist.grid_values()

    def probe_values(self) -> tuple[Any, ...]:
        """Values that stand for the whole distribution when configs are checked: every value of
        a finite one, the bounds of a range an optimizer samples."""
        return self.dist.probe_values()


@dataclass(frozen=True)
class SearchSpace:
    """The swept parameters, in the order the sweep file gives them."""

    parameters: tuple[Parameter, ...] = ()

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def grid_size(self) -> int:
        """Value combinations of the grid expansion (1 for an empty space)."""
        return math.prod(len(p.values) for p in self.parameters)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Each parameter's distribution as JSON, for the run's manifest and events."""
        return {p.name: p.dist.describe() for p in self.parameters}


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its id, position, parameter values, repeat and seed."""

    trial_id: str
    index: int
    params: dict[str, Any]
    repeat: int
    seed: int


def trial_id(index: int) -> str:
    """The id of the trial at a position: `t00042`."""
    return f"t{index:05d}"
