"""Adaptive search: a `search:` section turns a sweep into an Optuna study (ask and tell).

This package's own module imports nothing heavy: whether a run is a search is asked by `seel
report` and `seel plot` of every run, and importing Optuna costs a tenth of a second.
"""

from __future__ import annotations

from pathlib import Path

STUDY_FILE = "study.journal"  # the study's Optuna journal, in the run directory


def is_search_run(run_dir: Path) -> bool:
    """Whether the run directory holds an adaptive search (an Optuna journal)."""
    return (run_dir / STUDY_FILE).is_file()
