"""The run's Optuna study on disk: a journal file in the run directory (`study.journal`), which
`optuna` and `optuna-dashboard` open like any study's storage.

Each study trial carries the SEEL trial id in the user attribute `seel_trial_id`; a configuration
asked again after a lost run carries `seel_retry_of`; an interrupted run is marked
`seel_interrupted`. The study itself carries the `search:` section (`seel_search`) and the
objectives' labels (`seel_objectives`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from seel.errors import RunDirError
from seel.search import STUDY_FILE

TRIAL_ID_ATTR = "seel_trial_id"
RETRY_OF_ATTR = "seel_retry_of"
INTERRUPTED_ATTR = "seel_interrupted"
SETTINGS_ATTR = "seel_search"  # the study's: the search: section as SEEL read it
OBJECTIVES_ATTR = "seel_objectives"  # the study's: each objective's label

optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Optuna marks some of what SEEL uses experimental; that is not the user's concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def storage(path: Path) -> JournalStorage:
    """The journal storage of the file at `path`."""
    return JournalStorage(JournalFileBackend(str(path)))


def open_study(
    path: Path,
    name: str,
    directions: Sequence[str],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """The study in the journal at `path`, created if it does not exist yet."""
    with quiet():
        return optuna.create_study(
            storage=storage(path),
            study_name=name,
            sampler=sampler,
            pruner=pruner,
            directions=[
                StudyDirection.MAXIMIZE if d == "maximize" else StudyDirection.MINIMIZE
                for d in directions
            ],
            load_if_exists=True,
        )


def load_run_study(run_dir: Path) -> optuna.Study:
    """The run's study, read from its journal."""
    path = run_dir / STUDY_FILE
    if not path.is_file():
        raise RunDirError(f"{run_dir}: not an adaptive search (no {STUDY_FILE})")
    with quiet():
        journal = storage(path)
        names = optuna.study.get_all_study_names(journal)
        if not names:
            raise RunDirError(f"{path}: holds no study")
        return optuna.load_study(study_name=names[0], storage=journal)


def trial_id(t: FrozenTrial) -> str:
    """The SEEL trial id of a study trial (`#N` for one SEEL never ran)."""
    return str(t.user_attrs.get(TRIAL_ID_ATTR, f"#{t.number}"))


def value_at(index: int) -> Callable[[FrozenTrial], float]:
    """A target that picks one objective's value of a trial."""

    def target(t: FrozenTrial) -> float:
        return float(t.values[index])

    return target
