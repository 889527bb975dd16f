"""OptunaSource: a TrialSource that asks an Optuna study for each trial and tells it each outcome.

The study lives in the run directory as an Optuna journal (seel/search/study.py). SEEL's ledger stays the source of truth: on resume,
every finished trial of the ledger is in the study with its ledger result, trials the study still
has running (the controller died while they ran) are failed there and their configurations asked
again, and the budget counts the ledger's finished trials, so it is met exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from seel.events import SearchProgress
from seel.outcome import Outcome, Status
from seel.results import result_rows
from seel.search.spec import Objective, SearchSettings, is_trial_column, reduce_parties
from seel.search.study import (
    INTERRUPTED_ATTR,
    OBJECTIVES_ATTR,
    RETRY_OF_ATTR,
    SETTINGS_ATTR,
    TRIAL_ID_ATTR,
    open_study,
    quiet,
)
from seel.space import TrialSpec


def objective_value(objective: Objective, outcome: Outcome) -> float | None:
    """The objective's number for a finished trial (None if the trial did not produce it)."""
    metric = objective.metric
    if not is_trial_column(metric):
        ordered = sorted(outcome.parties, key=lambda p: p.index)
        return reduce_parties([p.metrics.get(metric) for p in ordered], objective.parties)
    value = result_rows(outcome.to_json())[0].get(metric)  # as the trial's results row has it
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, without its `study.stop()` once the grid is done: that only works
    inside `study.optimize`, and here the budget (at most the grid's size) ends the search."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        pass


def make_sampler(
    settings: SearchSettings, grid: Mapping[str, tuple[Any, ...]] | None, seed: int | None
) -> optuna.samplers.BaseSampler:
    """Optuna's sampler for `settings.sampler`; TPE uses the constant-liar strategy."""
    name = settings.sampler
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "grid":
        assert grid is not None
        return _AskTellGridSampler({k: list(v) for k, v in grid.items()}, seed=seed)
    raise ValueError(f"unknown sampler {name!r}")


def make_pruner(settings: SearchSettings) -> optuna.pruners.BasePruner:
    """Optuna's pruner; steps are round numbers (1, 2, ...), values the global accuracy."""
    p = settings.pruner
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_rounds, max_resource=p.max_rounds or "auto"
        )
    if p.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.startup_trials, n_warmup_steps=p.min_rounds
        )
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_rounds)
    return optuna.pruners.NopPruner()


def _trial_number(trial_id: str) -> int | None:
    digits = trial_id.removeprefix("t")
    return int(digits) if digits.isdigit() else None


class OptunaSource:
    """Trials asked of an Optuna study, up to a budget of finished trials."""

    def __init__(
        self,
        *,
        study_path: Path,
        study_name: str,
        settings: SearchSettings,
        distributions: Mapping[str, BaseDistribution],
        grid: Mapping[str, tuple[Any, ...]] | None,
        make_trial: Callable[[str, int, dict[str, Any]], TrialSpec],
        ledger: Iterable[dict[str, Any]] = (),
        emit: Callable[[SearchProgress], None] | None = None,
    ) -> None:
        """`make_trial(trial_id, index, params)` builds the TrialSpec; `ledger` is the run's
        ledger (its JSON lines); `emit` receives the progress after each finished trial."""
        self.settings = settings
        self.total = settings.trials
        self.distributions = dict(distributions)
        self._grid = grid
        self._make_trial = make_trial
        self._emit = emit
        self._running: dict[str, optuna.Trial] = {}
        self._pruning: set[str] = set()
        self._reported: dict[str, set[int]] = {}
        self._finished: dict[str, Outcome] = {}
        latest: dict[str, dict[str, Any]] = {}
        for doc in ledger:
            latest[str(doc["trial_id"])] = doc
        for trial_id, doc in latest.items():
            if doc["status"] != Status.INTERRUPTED:
                self._finished[trial_id] = Outcome.from_json(doc)
        with quiet():
            self.study = open_study(
                study_path,
                study_name,
                settings.directions,
                make_sampler(settings, grid, settings.seed),
                make_pruner(settings),
            )
            known = len(self.study.get_trials(deepcopy=False))
            if known and settings.seed is not None:
                # A resumed search does not draw the same configurations again.
                self.study.sampler = make_sampler(settings, grid, settings.seed + known)
            self._reconcile()
            if not known:
                self.study.set_user_attr(SETTINGS_ATTR, settings.describe())
                self.study.set_user_attr(OBJECTIVES_ATTR, [o.label() for o in settings.objectives])
        numbers = [_trial_number(t) for t in [*latest, *self._study_ids()]]
        self._next_number = max([n for n in numbers if n is not None], default=-1) + 1

    # -- resume ---------------------------------------------------------------------------

    def _study_ids(self) -> list[str]:
        return [
            str(t.user_attrs[TRIAL_ID_ATTR])
            for t in self.study.get_trials(deepcopy=False)
            if TRIAL_ID_ATTR in t.user_attrs
        ]

    def _reconcile(self) -> None:
        """Bring the study in line with the ledger (see the module's docstring)."""
        trials = self.study.get_trials(deepcopy=False)
        by_id: dict[str, FrozenTrial] = {}
        for t in trials:
            if TRIAL_ID_ATTR in t.user_attrs:
                by_id[str(t.user_attrs[TRIAL_ID_ATTR])] = t
        asked_again = {
            str(t.user_attrs[RETRY_OF_ATTR])
            for t in trials
            if RETRY_OF_ATTR in t.user_attrs
            and (TRIAL_ID_ATTR in t.user_attrs or t.state == TrialState.WAITING)
        }
        for t in trials:
            trial_id = t.user_attrs.get(TRIAL_ID_ATTR)
            if t.state == TrialState.RUNNING and trial_id in self._finished:
                # Recorded in the ledger, but the controller died before telling the study.
                self._tell_study(t.number, self._finished[str(trial_id)])
                continue
            lost = t.state == TrialState.RUNNING or (
                t.state == TrialState.FAIL
                and t.user_attrs.get(INTERRUPTED_ATTR)
                and trial_id not in self._finished
            )
            if not lost:
                continue
            if t.state == TrialState.RUNNING:
                self.study.tell(t.number, state=TrialState.FAIL)
            retry_of = str(trial_id) if trial_id is not None else t.user_attrs.get(RETRY_OF_ATTR)
            if retry_of is not None and retry_of in asked_again:
                continue
            if set(t.params) == set(self.distributions):
                attrs = {RETRY_OF_ATTR: retry_of} if retry_of is not None else {}
                self.study.enqueue_trial(dict(t.params), user_attrs=attrs)
                if retry_of is not None:
                    asked_again.add(retry_of)
        for trial_id, outcome in self._finished.items():
            if trial_id not in by_id:
                self._add_from_ledger(trial_id, outcome)

    def _add_from_ledger(self, trial_id: str, outcome: Outcome) -> None:
        """A ledger trial the journal lost (its tail was not written): add it as it finished."""
        params = {k: v for k, v in outcome.params.items() if k in self.distributions}
        if set(params) != set(self.distributions):
            return
        state, values = self._result(outcome)
        try:
            trial = optuna.trial.create_trial(
                params=params,
                distributions=self.distributions,
                state=state,
                values=values,
                user_attrs={TRIAL_ID_ATTR: trial_id},
            )
            self.study.add_trial(trial)
        except ValueError:
            return  # a value the space no longer holds: the ledger keeps it, the study cannot

    # -- TrialSource ----------------------------------------------------------------------

    @property
    def finished_count(self) -> int:
        return len(self._finished)

    def finished(self) -> bool:
        """The budget is spent: nothing more will come."""
        return len(self._finished) >= self.total

    def next_trial(self) -> TrialSpec | None:
        """Ask the study for the next configuration, unless the budget is taken by finished and
        running trials."""
        if len(self._finished) + len(self._running) >= self.total:
            return None
        with quiet():
            trial = self.study.ask(fixed_distributions=self.distributions)
            trial_id = f"t{self._next_number:05d}"
            self._next_number += 1
            trial.set_user_attr(TRIAL_ID_ATTR, trial_id)
        self._running[trial_id] = trial
        params = {name: self._snap(name, value) for name, value in trial.params.items()}
        return self._make_trial(trial_id, _trial_number(trial_id) or 0, params)

    def _snap(self, name: str, value: Any) -> Any:
        """A stepped float as the grid writes it (0.3, not 0.30000000000000004)."""
        values = self._grid.get(name) if self._grid else None
        if not values or isinstance(value, bool) or not isinstance(value, float):
            return value
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) != len(values):
            return value
        nearest = min(numbers, key=lambda v: abs(Decimal(str(v)) - Decimal(repr(value))))
        return nearest if math.isclose(nearest, value, rel_tol=1e-9, abs_tol=1e-12) else value

    def observe(self, trial_id: str, round: int, value: float | None) -> bool:
        """A round finished with global accuracy `value`: True when the trial should be pruned."""
        trial = self._running.get(trial_id)
        if trial is None or self.settings.pruner.name == "none":
            return False
        if trial_id in self._pruning:
            return True
        if value is None or not math.isfinite(value):
            return False
        if round in self._reported.setdefault(trial_id, set()):
            return False  # a retried attempt reports its rounds again: the first one counts
        self._reported[trial_id].add(round)
        with quiet():
            trial.report(value, step=round)
            prune = trial.should_prune()
        if prune:
            self._pruning.add(trial_id)
        return prune

    def tell(self, outcome: Outcome) -> None:
        """Tell the study how the trial ended; an interrupted trial is asked again on resume."""
        trial = self._running.pop(outcome.trial_id, None)
        self._pruning.discard(outcome.trial_id)
        self._reported.pop(outcome.trial_id, None)
        if trial is None:
            return
        with quiet():
            if outcome.status is Status.INTERRUPTED:
                trial.set_user_attr(INTERRUPTED_ATTR, True)
                self.study.tell(trial, state=TrialState.FAIL)
                return
            self._finished[outcome.trial_id] = outcome
            self._tell_study(trial.number, outcome)
        if self._emit is not None:
            self._emit(self.progress())

    def _result(self, outcome: Outcome) -> tuple[TrialState, list[float] | None]:
        if outcome.status is Status.PRUNED:
            return TrialState.PRUNED, None
        if outcome.status is not Status.OK:
            return TrialState.FAIL, None
        values = [objective_value(o, outcome) for o in self.settings.objectives]
        if any(v is None for v in values):
            return TrialState.FAIL, None
        return TrialState.COMPLETE, [float(v) for v in values if v is not None]

    def _tell_study(self, number: int, outcome: Outcome) -> None:
        state, values = self._result(outcome)
        with quiet():
            self.study.tell(number, values, state=state, skip_if_finished=True)

    # -- progress -------------------------------------------------------------------------

    def progress(self) -> SearchProgress:
        """Finished against the budget, pruned count, and the best trial(s) so far."""
        with quiet():
            try:
                best = self.study.best_trials
            except ValueError:  # nothing complete yet
                best = []
        return SearchProgress(
            budget=self.total,
            finished=len(self._finished),
            pruned=sum(o.status is Status.PRUNED for o in self._finished.values()),
            objectives=[o.label() for o in self.settings.objectives],
            directions=self.settings.directions,
            best=[
                {
                    "trial_id": t.user_attrs.get(TRIAL_ID_ATTR),
                    "values": list(t.values),
                    "params": {k: self._snap(k, v) for k, v in t.params.items()},
                }
                for t in sorted(best, key=lambda t: t.number)
            ],
        )
