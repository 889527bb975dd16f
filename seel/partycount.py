"""The number of parties of a trial: the sweep parameter `parties.count`.

Without it, a trial runs one party per party config the sweep lists, as written. With it (swept,
or fixed with `parties.count=N`), a trial runs N party processes; process i is made from config
i mod K of the K listed, and the engine's `index_keys` (set to i) and `count_keys` (set to N, in
the aggregator's config too) tell each process where it stands. `party[i].KEY` names process i,
so i must be below the smallest count any trial can have.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from seel.space import Distribution, Drawn, Stepped, Target

COUNT_PARAMETER = "parties.count"
COUNT_TARGET = Target("trial", None, COUNT_PARAMETER)
# Every party is a process with a port of its own; more than this on one machine is a typo.
MAX_PARTIES = 100


def check_count(value: Any) -> int:
    """A number of parties; ValueError says why a value is not one."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"the number of parties must be an integer, not {value!r}")
    if value < 1:
        raise ValueError(f"the number of parties must be at least 1, not {value}")
    if value > MAX_PARTIES:
        raise ValueError(f"the number of parties must be at most {MAX_PARTIES}, not {value}")
    return value


def check_distribution(dist: Distribution) -> None:
    """Every count a distribution can give is a number of parties; ValueError says why not."""
    if isinstance(dist, Drawn) and dist.kind != "int":
        raise ValueError(
            f"the number of parties is drawn from an int range ({{random: int, low, high}}),"
            f" not {dist.kind}"
        )
    if isinstance(dist, Stepped) and not dist.is_int:
        raise ValueError("the number of parties takes an int range: min, max and step as integers")
    values = (dist.low, dist.high) if isinstance(dist, Drawn) else dist.probe_values()
    for value in values:
        check_count(value)


def count_values(dist: Distribution) -> tuple[int, ...]:
    """The counts that stand for a distribution when configs are checked (a range: its bounds)."""
    return tuple(int(v) for v in dist.probe_values())


@dataclass(frozen=True)
class PartyCount:
    """How many parties a sweep's trials run, from `smallest` to `largest`; `swept` says whether
    the sweep names `parties.count` at all (if not, one party per config, as written)."""

    n_configs: int
    swept: bool
    smallest: int
    largest: int

    @classmethod
    def of(
        cls,
        n_configs: int,
        parameters: Iterable[tuple[Target, Distribution]],
        fixed: Iterable[tuple[Target, Any]],
    ) -> PartyCount:
        """From the sweep's parameters and fixed overrides (target and distribution or value)."""
        for target, value in fixed:
            if target == COUNT_TARGET:
                return cls(n_configs, True, int(value), int(value))
        for target, dist in parameters:
            if target == COUNT_TARGET:
                counts = count_values(dist)
                return cls(n_configs, True, min(counts), max(counts))
        return cls(n_configs, False, n_configs, n_configs)

    def checked_counts(self) -> tuple[int, ...]:
        """The counts a sweep's configs are checked at: the smallest and the largest."""
        return tuple(dict.fromkeys((self.smallest, self.largest)))

    def of_trial(self, params: dict[str, Any]) -> int:
        """The number of parties of a trial with these parameter values (fixed, or not set:
        the one count every trial has)."""
        return int(params.get(COUNT_PARAMETER, self.smallest))

    def config_of(self, party_index: int) -> int:
        """The index of the party config that process `party_index` is made from."""
        return party_index % self.n_configs

    def index_problem(self, party_index: int) -> str | None:
        """Why `party[party_index]` names no party of some trial, or None if it names one in all."""
        if party_index < self.smallest:
            return None
        if not self.swept:
            return (
                f"party index {party_index} is out of range: there are {self.n_configs} party"
                f" configs (indexes 0 to {self.n_configs - 1})"
            )
        return (
            f"party index {party_index} is out of range: a trial may have as few as"
            f" {self.smallest} parties ({COUNT_PARAMETER}), so indexes 0 to {self.smallest - 1}"
        )
