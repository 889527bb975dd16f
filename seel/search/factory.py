"""Where an adaptive search's trials come from: the sweep's `search:` section checked against the
engine and the space, the space as Optuna distributions, and the OptunaSource for `run_sweep`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from seel.engine import PHASES, Engine
from seel.errors import SpecError
from seel.events import Event
from seel.plan import Plan
from seel.search import STUDY_FILE
from seel.search.source import OptunaSource
from seel.search.spec import EngineFacts, SearchSettings, parse_search
from seel.space import Drawn, Listed, SearchSpace, Stepped, TrialSpec
from seel.store import RunDir, read_ledger
from seel.sweep import SweepSpec

_CHOICE_TYPES = (type(None), bool, int, float, str)


def engine_facts(engine: Engine) -> EngineFacts:
    """What the `search:` checks need to know of an engine."""
    return EngineFacts(
        name=engine.name,
        has_round_accuracy=engine.reports_round_values,
        metrics_keys=engine.metrics_keys,
        phases=PHASES,
    )


def grid_size(space: SearchSpace) -> int | None:
    """The grid's size, or None when a parameter has no grid (a random range without count)."""
    try:
        return space.grid_size()
    except ValueError:
        return None


def search_settings(plan: Plan) -> SearchSettings | None:
    """The plan's `search:` section, checked (SpecError), or None for a grid."""
    spec = plan.spec
    if spec.search is None:
        return None
    settings = parse_search(
        spec.search,
        spec.path,
        engine_facts(plan.engine),
        plan.count.smallest,  # a `parties: i` objective names a party of every trial
        grid_size(spec.space),
        spec.repeats,
    )
    optuna_space(spec)  # every parameter must be something a sampler can draw
    return settings


def optuna_space(
    spec: SweepSpec,
) -> tuple[dict[str, BaseDistribution], dict[str, tuple[Any, ...]] | None]:
    """Each parameter as an Optuna distribution, and the grid's values (None without a grid)."""
    distributions: dict[str, BaseDistribution] = {}
    grid: dict[str, tuple[Any, ...]] | None = {}
    for p in spec.space.parameters:
        dist = p.dist
        if isinstance(dist, Listed):
            if not all(isinstance(v, _CHOICE_TYPES) for v in dist.values):
                raise SpecError(
                    spec.path,
                    f"parameters.{p.name}",
                    "a search chooses among numbers, strings, booleans and null; not lists or maps",
                )
            distributions[p.name] = CategoricalDistribution(list(dist.values))
        elif isinstance(dist, Stepped):
            values = dist.grid_values()
            low, high = min(values), max(values)
            if dist.is_int:
                distributions[p.name] = IntDistribution(
                    int(low), int(high), step=abs(int(dist.step))
                )
            else:
                distributions[p.name] = FloatDistribution(
                    float(low), float(high), step=abs(float(dist.step)) if len(values) > 1 else None
                )
        elif isinstance(dist, Drawn):
            if dist.kind == "int":
                distributions[p.name] = IntDistribution(int(dist.low), int(dist.high))
            else:
                log = dist.kind == "loguniform"
                if log and not dist.low > 0:
                    raise SpecError(
                        spec.path, f"parameters.{p.name}.low", "loguniform needs low > 0"
                    )
                distributions[p.name] = FloatDistribution(
                    float(dist.low), float(dist.high), log=log
                )
        if grid is not None:
            try:
                grid[p.name] = tuple(dist.grid_values())
            except ValueError:
                grid = None
    return distributions, grid


def search_source(
    emit: Callable[[Event], None],
) -> Callable[[Plan, RunDir], OptunaSource]:
    """A `run_sweep(source=...)` factory: the run's study, reconciled with its ledger."""

    def factory(plan: Plan, run_dir: RunDir) -> OptunaSource:
        settings = search_settings(plan)
        assert settings is not None, "search_source needs a sweep with search:"
        spec = plan.spec
        distributions, grid = optuna_space(spec)

        def make_trial(trial_id: str, index: int, params: dict[str, Any]) -> TrialSpec:
            return TrialSpec(trial_id, index, params, repeat=0, seed=spec.seed)

        return OptunaSource(
            study_path=run_dir.path / STUDY_FILE,
            study_name=spec.name,
            settings=settings,
            distributions=distributions,
            grid=grid,
            make_trial=make_trial,
            ledger=read_ledger(run_dir.ledger_path),
            emit=emit,
        )

    return factory
