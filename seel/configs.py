"""The user's configs: loaded once (round-trip, comments kept), and checked against what is swept.

The sweep loader and the plan share one `BaseConfigs`; the user's files are never written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from seel import yamledit
from seel.grammar import describe, is_number
from seel.space import Target


@dataclass(frozen=True)
class BaseConfigs:
    """The aggregator's and the parties' config files and their loaded documents."""

    aggregator_path: Path
    party_paths: tuple[Path, ...]
    aggregator: CommentedMap = field(repr=False, compare=False)
    parties: tuple[CommentedMap, ...] = field(repr=False, compare=False)

    @classmethod
    def load(cls, aggregator_path: Path, party_paths: Sequence[Path]) -> BaseConfigs:
        """Load every config once; SpecError names a file that is not valid YAML."""
        return cls(
            aggregator_path,
            tuple(party_paths),
            yamledit.load_roundtrip(aggregator_path),
            tuple(yamledit.load_roundtrip(p) for p in party_paths),
        )

    @property
    def n_parties(self) -> int:
        """The number of party configs (a trial may run more or fewer: `parties.count`)."""
        return len(self.party_paths)

    def paths(self) -> list[Path]:
        """Aggregator first, then the parties in order."""
        return [self.aggregator_path, *self.party_paths]

    def docs(self) -> list[CommentedMap]:
        """Aggregator first, then the parties in order."""
        return [self.aggregator, *self.parties]

    def targeted(self, target: Target) -> list[tuple[Path, CommentedMap]]:
        """The (path, document) pairs a target writes to (`party[i]`: the config party i is made
        from; the number of parties: none)."""
        if target.process == "aggregator":
            return [(self.aggregator_path, self.aggregator)]
        if target.process == "trial":
            return []
        pairs = list(zip(self.party_paths, self.parties, strict=True))
        if target.party_index is None:
            return pairs
        return [pairs[target.party_index % len(pairs)]]

    def check(self, target: Target, values: Sequence[Any]) -> None:
        """Check the target key exists and takes each value; ValueError says why not."""
        for config_path, doc in self.targeted(target):
            if not yamledit.has_path(doc, target.path):
                raise ValueError(f"no such key in {config_path}")
            existing = yamledit.to_plain(yamledit.get_path(doc, target.path))
            for value in values:
                why = type_mismatch(existing, value)
                if why is not None:
                    raise ValueError(f"{why} in {config_path}")


def type_mismatch(existing: Any, value: Any) -> str | None:
    """Why ``value`` cannot replace ``existing`` in a config, or None if it can."""
    if existing is None:
        return None
    if isinstance(existing, dict | list):
        return f"the config has {describe(existing)} there; only scalar values can be set"
    if isinstance(existing, bool):
        ok = isinstance(value, bool)
    elif isinstance(existing, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(existing, float):
        ok = is_number(value)
    elif isinstance(existing, str):
        ok = isinstance(value, str)
    else:
        ok = type(value) is type(existing)
    if ok:
        return None
    return (
        f"value {value!r} is {describe(value)}, but the config has {describe(existing)}"
        f" ({existing!r}) there"
    )
