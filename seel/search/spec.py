"""The `search:` section of a sweep file: which sampler, how many trials, what to optimize, when
to stop a trial early. Parsed and checked before any process starts; every mistake is one
SpecError naming `search.<key>`.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seel.errors import SpecError
from seel.results import duration_phase, lower_is_better

SAMPLERS = ("tpe", "random", "gp", "cmaes", "nsga2", "grid")
PRUNERS = ("hyperband", "median", "successive_halving", "none")
PARTY_REDUCTIONS = ("mean", "min", "max")
DIRECTIONS = ("maximize", "minimize")
# Columns of a trial's results (not of a party) that an objective may name;
# `duration.PHASE_s` too.
OBJECTIVE_TRIAL_COLUMNS = ("final_global_acc", "elapsed_s", "rounds_completed")
# What each sampler needs beyond Optuna itself (module, pip name).
_SAMPLER_NEEDS = {"gp": ("torch", "torch"), "cmaes": ("cmaes", "cmaes")}
_KEYS = ("sampler", "trials", "seed", "objective", "objectives", "pruner")
_OBJECTIVE_KEYS = ("metric", "parties", "direction")
_PRUNER_KEYS = ("name", "min_rounds", "max_rounds", "startup_trials")


@dataclass(frozen=True)
class Objective:
    """One number per trial: a metric, reduced over parties, and which way is better."""

    metric: str
    parties: str | int  # "mean" | "min" | "max" | a party index; unused for trial columns
    direction: str  # "maximize" | "minimize"

    @property
    def per_party(self) -> bool:
        """Whether the metric is printed by each party (not a column of the trial)."""
        return not is_trial_column(self.metric)

    def label(self) -> str:
        """`acc (min over parties)`, or the trial column's name."""
        if not self.per_party:
            return self.metric
        over = (
            f"party {self.parties}"
            if isinstance(self.parties, int)
            else f"{self.parties} over parties"
        )
        return f"{self.metric} ({over})"


@dataclass(frozen=True)
class PrunerSettings:
    """When a running trial is stopped: after `min_rounds` rounds, by Optuna's pruner `name`."""

    name: str
    min_rounds: int = 1
    max_rounds: int | None = None  # None: Hyperband estimates it from the first finished trial
    startup_trials: int = 5  # median: trials that finish before any is pruned


@dataclass(frozen=True)
class SearchSettings:
    """A validated `search:` section."""

    sampler: str
    trials: int
    seed: int | None
    objectives: tuple[Objective, ...]
    pruner: PrunerSettings

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def describe(self) -> dict[str, Any]:
        """JSON for the run's plan."""
        return {
            "sampler": self.sampler,
            "trials": self.trials,
            "seed": self.seed,
            "objectives": [
                {"metric": o.metric, "parties": o.parties, "direction": o.direction}
                for o in self.objectives
            ],
            "pruner": {
                "name": self.pruner.name,
                "min_rounds": self.pruner.min_rounds,
                "max_rounds": self.pruner.max_rounds,
                "startup_trials": self.pruner.startup_trials,
            },
        }


def is_trial_column(metric: str) -> bool:
    """Whether `metric` names a column of the trial rather than a metric the parties print."""
    return metric in OBJECTIVE_TRIAL_COLUMNS or duration_phase(metric) is not None


@dataclass(frozen=True)
class EngineFacts:
    """What the search needs to know about the engine to check a `search:` section."""

    name: str
    has_round_accuracy: bool  # prints a per-round line with the global accuracy
    metrics_keys: tuple[str, ...]  # what a party's metrics line holds; () when not declared
    phases: tuple[str, ...]


def parse_search(
    raw: Any,
    file: Path | str,
    engine: EngineFacts,
    n_parties: int,
    grid_size: int | None,
    repeats: int = 1,
) -> SearchSettings | None:
    """The `search:` section, checked against the engine and the space; None when there is none.

    `grid_size` is the number of configurations a grid sweeps (None: a parameter without a grid,
    so the grid sampler cannot be used); `n_parties` is the fewest parties a trial can have.
    """
    if raw is None:
        return None
    r = _Reader(file)
    if not isinstance(raw, Mapping):
        raise SpecError(file, "search", f"expected a mapping, got {raw!r}")
    for key in raw:
        if key not in _KEYS:
            raise r.fail(str(key), f"unknown key (expected one of {', '.join(_KEYS)})")
    if repeats != 1:
        raise SpecError(file, "repeats", "a search runs each configuration once: repeats must be 1")
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise r.fail(
            "sampler", f"unknown sampler {sampler!r} (expected one of {', '.join(SAMPLERS)})"
        )
    needs = _SAMPLER_NEEDS.get(sampler)
    if needs and importlib.util.find_spec(needs[0]) is None:
        raise r.fail("sampler", f"{sampler} needs the {needs[1]} package (pip install {needs[1]})")
    trials = raw.get("trials")
    if trials is None:
        raise r.fail("trials", "missing: the budget, how many trials finish")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise r.fail("trials", f"expected a whole number of trials >= 1, got {trials!r}")
    if sampler == "grid":
        if grid_size is None:
            raise r.fail(
                "sampler", "grid needs a grid of every parameter (values, or min/max/step)"
            )
        if trials > grid_size:
            raise r.fail("trials", f"{trials} is more than the grid's {grid_size} configurations")
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise r.fail("seed", f"expected a whole number >= 0, got {seed!r}")
    objectives = _objectives(raw, r, engine, n_parties)
    pruner = _pruner(raw.get("pruner"), r, engine, objectives)
    if len(objectives) > 1 and sampler == "cmaes":
        raise r.fail("sampler", "cmaes optimizes one objective; use tpe, random, gp or nsga2")
    return SearchSettings(sampler, trials, seed, objectives, pruner)


class _Reader:
    def __init__(self, file: Path | str) -> None:
        self.file = file

    def fail(self, key: str, why: str) -> SpecError:
        return SpecError(self.file, f"search.{key}" if key else "search", why)


def _objectives(
    raw: Mapping[str, Any], r: _Reader, engine: EngineFacts, n_parties: int
) -> tuple[Objective, ...]:
    if "objective" in raw and "objectives" in raw:
        raise r.fail("objectives", "give objective or objectives, not both")
    if "objectives" in raw:
        docs = raw["objectives"]
        if not isinstance(docs, Sequence) or isinstance(docs, str) or not docs:
            raise r.fail("objectives", "expected a non-empty list of {metric, parties, direction}")
        found = tuple(
            _objective(doc, r, f"objectives[{i}]", engine, n_parties) for i, doc in enumerate(docs)
        )
        labels = [o.label() for o in found]
        if len(set(labels)) != len(labels):
            raise r.fail("objectives", "the same objective is listed twice")
        return found
    doc = raw.get("objective", {"metric": "acc"})
    return (_objective(doc, r, "objective", engine, n_parties),)


def _objective(doc: Any, r: _Reader, key: str, engine: EngineFacts, n_parties: int) -> Objective:
    if isinstance(doc, str):
        doc = {"metric": doc}
    if not isinstance(doc, Mapping):
        raise r.fail(key, f"expected a mapping {{metric, parties, direction}}, got {doc!r}")
    for name in doc:
        if name not in _OBJECTIVE_KEYS:
            raise r.fail(f"{key}.{name}", f"unknown key (expected {', '.join(_OBJECTIVE_KEYS)})")
    metric = doc.get("metric")
    if not isinstance(metric, str) or not metric:
        raise r.fail(f"{key}.metric", f"expected a metric name, got {metric!r}")
    if is_trial_column(metric):
        phase = duration_phase(metric)
        if phase is not None and phase not in engine.phases:
            raise r.fail(
                f"{key}.metric", f"no phase {phase!r} (phases: {', '.join(engine.phases)})"
            )
        if "parties" in doc:
            raise r.fail(f"{key}.parties", f"{metric} is a column of the trial, not of a party")
    elif engine.metrics_keys and metric not in engine.metrics_keys:
        known = ", ".join([*engine.metrics_keys, *OBJECTIVE_TRIAL_COLUMNS])
        raise r.fail(
            f"{key}.metric",
            f"engine {engine.name} prints no metric {metric!r} (it prints: {known})",
        )
    parties = doc.get("parties", "mean")
    if isinstance(parties, bool) or not (parties in PARTY_REDUCTIONS or isinstance(parties, int)):
        raise r.fail(f"{key}.parties", f"expected mean, min, max or a party index, got {parties!r}")
    if isinstance(parties, int) and not 0 <= parties < n_parties:
        raise r.fail(
            f"{key}.parties",
            f"no party {parties} in every trial (the smallest trial has {n_parties} parties)",
        )
    direction = doc.get("direction", _default_direction(metric))
    if direction not in DIRECTIONS:
        raise r.fail(f"{key}.direction", f"expected maximize or minimize, got {direction!r}")
    return Objective(metric, parties, direction)


def _default_direction(metric: str) -> str:
    return "minimize" if lower_is_better(metric) else "maximize"


def _pruner(
    doc: Any, r: _Reader, engine: EngineFacts, objectives: tuple[Objective, ...]
) -> PrunerSettings:
    if doc is None:
        return PrunerSettings("none")
    if isinstance(doc, str):
        doc = {"name": doc}
    if not isinstance(doc, Mapping):
        raise r.fail("pruner", f"expected a mapping {{name, min_rounds}}, got {doc!r}")
    for name in doc:
        if name not in _PRUNER_KEYS:
            raise r.fail(f"pruner.{name}", f"unknown key (expected {', '.join(_PRUNER_KEYS)})")
    name = doc.get("name")
    if name not in PRUNERS:
        raise r.fail(
            "pruner.name", f"unknown pruner {name!r} (expected one of {', '.join(PRUNERS)})"
        )
    min_rounds = _whole(doc, "min_rounds", 1, 1, r)
    max_rounds = _whole(doc, "max_rounds", None, min_rounds, r)
    startup = _whole(doc, "startup_trials", 5, 0, r)
    if name == "none":
        return PrunerSettings("none", min_rounds, max_rounds, startup)
    if not engine.has_round_accuracy:
        raise r.fail(
            "pruner",
            f"engine {engine.name} prints no per-round line with the global accuracy to prune on",
        )
    if len(objectives) > 1:
        raise r.fail("pruner", "pruning needs a single objective (Optuna prunes one value)")
    if objectives[0].direction != "maximize":
        raise r.fail(
            "pruner",
            "trials are pruned on the per-round global accuracy, so the objective must be maximized",
        )
    return PrunerSettings(name, min_rounds, max_rounds, startup)


def _whole(doc: Mapping[str, Any], key: str, default: int | None, minimum: int, r: _Reader) -> Any:
    value = doc.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise r.fail(f"pruner.{key}", f"expected a whole number >= {minimum}, got {value!r}")
    return value


def reduce_parties(values: Sequence[float | None], parties: str | int) -> float | None:
    """One number from the parties' values (None if any needed value is missing or not finite)."""
    if isinstance(parties, int):
        picked = values[parties] if parties < len(values) else None
        return picked if picked is not None and math.isfinite(picked) else None
    numbers = [v for v in values if v is not None and math.isfinite(v)]
    if not values or len(numbers) != len(values):
        return None
    if parties == "min":
        return min(numbers)
    if parties == "max":
        return max(numbers)
    return math.fsum(numbers) / len(numbers)
