"""`seel plot` on an adaptive search: Optuna's matplotlib pictures of the run's study.

The optimization history, fANOVA parameter importances, the per-round global accuracy of every
trial (pruned ones stop early), and for several objectives the Pareto front.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
from optuna.trial import TrialState

from seel.search.study import OBJECTIVES_ATTR, load_run_study, quiet, value_at

_MAX_LEGEND = 12


def _save(ax: Any, path: Path) -> Path:
    figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    figure.set_size_inches(9, 5.5)
    with warnings.catch_warnings():  # a long legend may not fit: bbox_inches makes room for it
        warnings.filterwarnings("ignore", "Tight layout not applied", UserWarning)
        figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_search(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Write the search's PNGs into `out_dir` (default RUN_DIR/plots); returns their paths."""
    study = load_run_study(run_dir)
    out = out_dir or run_dir / "plots"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    multi = len(study.directions) > 1
    labels = [str(o) for o in study.user_attrs.get(OBJECTIVES_ATTR) or []]
    if len(labels) != len(study.directions):
        labels = [f"objective {i}" for i in range(len(study.directions))]
    written: list[Path] = []
    vis = optuna.visualization.matplotlib
    with quiet():
        if not complete:
            return written
        if multi:
            written.append(
                _save(vis.plot_pareto_front(study, target_names=labels), out / "search-pareto.png")
            )
            for i, name in enumerate(labels):
                ax = vis.plot_optimization_history(study, target=value_at(i), target_name=name)
                written.append(_save(ax, out / f"search-history-{i}.png"))
        else:
            ax = vis.plot_optimization_history(study, target_name=labels[0])
            written.append(_save(ax, out / "search-history.png"))
        if len(complete) >= 2:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            if multi:
                for i, name in enumerate(labels):
                    ax = vis.plot_param_importances(
                        study,
                        evaluator=evaluator,
                        target=value_at(i),
                        target_name=name,
                    )
                    written.append(_save(ax, out / f"search-importances-{i}.png"))
            else:
                ax = vis.plot_param_importances(study, evaluator=evaluator, target_name=labels[0])
                written.append(_save(ax, out / "search-importances.png"))
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)) and not multi:
            ax = vis.plot_intermediate_values(study)
            ax.set_ylabel("global accuracy after the round")
            ax.set_xlabel("round")
            legend = ax.get_legend()
            if legend is not None and len(legend.get_texts()) > _MAX_LEGEND:
                legend.remove()  # a line per trial: past a dozen, names are noise
            written.append(_save(ax, out / "search-rounds.png"))
    return written
