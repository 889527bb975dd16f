"""The run's manifest, `RUN_DIR/plan.json`: what a run directory holds the results of.

Written once when a run starts and read back on resume (its fingerprint must match the sweep's)
and by `seel report` and `seel plot`. Version 1 files (no `version` key, each parameter as a list
of its grid values) are read as well.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MANIFEST_FILE = "plan.json"
VERSION = 2


@dataclass(frozen=True)
class RunManifest:
    """A run's identity and what it sweeps.

    `trial_count` is the grid's size, or the search's budget when `budget` is true;
    `parameters` maps each parameter to its distribution (`{values: [...]}`, `{min, max, step}`
    or `{random, low, high, ...}`).
    """

    run_id: str
    sweep: str
    name: str
    engine: str
    fingerprint: str
    trial_count: int
    budget: bool
    parameters: dict[str, dict[str, Any]]
    fixed: dict[str, Any]
    repeats: int
    overrides: list[str]
    version: int = VERSION

    @staticmethod
    def new_run_id() -> str:
        return uuid.uuid4().hex[:12]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RunManifest:
        """A manifest from its JSON; KeyError or TypeError if it is not one."""
        parameters = doc.get("parameters", {})
        if doc.get("version", 1) == 1:
            parameters = {name: {"values": values} for name, values in parameters.items()}
        return cls(
            run_id=str(doc["run_id"]),
            sweep=str(doc["sweep"]),
            name=str(doc["name"]),
            engine=str(doc["engine"]),
            fingerprint=str(doc["fingerprint"]),
            trial_count=int(doc["trial_count"]),
            budget=bool(doc.get("budget", False)),
            parameters=dict(parameters),
            fixed=dict(doc.get("fixed", {})),
            repeats=int(doc.get("repeats", 1)),
            overrides=list(doc.get("overrides", [])),
            version=VERSION,
        )

    @classmethod
    def read(cls, run_dir: Path) -> RunManifest | None:
        """The manifest of a run directory, or None if it has none (or an unreadable one)."""
        try:
            return cls.from_json(json.loads((run_dir / MANIFEST_FILE).read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
