"""What `seel report` can honestly say about an adaptive search: the optimization history, the
best trial (or, for several objectives, the Pareto front) and parameter importances from Optuna's
fANOVA evaluator. A search does not sample a factorial design, so the grid's permutation test of
each parameter's effect does not apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from seel.search.study import (
    OBJECTIVES_ATTR,
    SETTINGS_ATTR,
    load_run_study,
    quiet,
    trial_id,
    value_at,
)

IMPORTANCE_METHOD = "fanova"


@dataclass
class SearchReport:
    """The adaptive part of `seel report`."""

    study: str
    sampler: str
    directions: list[str]
    objectives: list[str]
    trials: int
    states: dict[str, int]
    best: list[dict[str, Any]]  # {trial, values, params}: the best trial, or the Pareto front
    history: list[dict[str, Any]]  # {trial, number, state, values, best}: in the order asked
    importances: dict[str, dict[str, float]] = field(default_factory=dict)  # objective -> param
    importance_method: str = IMPORTANCE_METHOD
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """As a dict for `jsonio.dumps` (which spells a value that is not finite)."""
        return asdict(self)


def build_search_report(run_dir: Path) -> SearchReport:
    """The history, best trial(s) and fANOVA importances of the run's study."""
    study = load_run_study(run_dir)
    search = study.user_attrs.get(SETTINGS_ATTR) or {}
    objectives = [str(o) for o in study.user_attrs.get(OBJECTIVES_ATTR) or []]
    if len(objectives) != len(study.directions):
        objectives = [f"objective {i}" for i in range(len(study.directions))]
    directions = [d.name.lower() for d in study.directions]
    with quiet():
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best_trials = study.best_trials if complete else []
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    report = SearchReport(
        study=study.study_name,
        sampler=str(search.get("sampler", "")),
        directions=directions,
        objectives=objectives,
        trials=len(trials),
        states=states,
        best=[
            {"trial": trial_id(t), "values": list(t.values), "params": dict(t.params)}
            for t in sorted(best_trials, key=lambda t: t.number)
        ],
        history=_history(trials, study.directions),
    )
    if len(complete) < 2:
        report.notes.append("fewer than 2 complete trials: no parameter importances")
        return report
    for i, name in enumerate(objectives):
        try:
            with quiet():
                importances = optuna.importance.get_param_importances(
                    study,
                    evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                    target=value_at(i) if len(objectives) > 1 else None,
                )
        except (ValueError, RuntimeError) as exc:
            report.notes.append(f"{name}: no parameter importances ({exc})")
            continue
        report.importances[name] = {k: float(v) for k, v in importances.items()}
    return report


def _history(trials: list[FrozenTrial], directions: list[StudyDirection]) -> list[dict[str, Any]]:
    """Each finished trial in the order asked, with the best value so far (single objective)."""
    rows: list[dict[str, Any]] = []
    best: float | None = None
    maximize = directions[0] == StudyDirection.MAXIMIZE
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.RUNNING or t.state == TrialState.WAITING:
            continue
        # A pruned trial's value in the study is its last round's: not the objective.
        values = list(t.values) if t.state == TrialState.COMPLETE and t.values else None
        if values is not None and len(directions) == 1:
            value = values[0]
            if best is None or (value > best if maximize else value < best):
                best = value
        rows.append(
            {
                "trial": trial_id(t),
                "number": t.number,
                "state": t.state.name.lower(),
                "values": values,
                "best": best if len(directions) == 1 else None,
                "rounds": len(t.intermediate_values),
            }
        )
    return rows
