"""The results schema: what a row of `results.parquet` / `results.csv` is, defined once.

One row per trial and party it ran (a trial with no party gets one row, with `party` null): when
a sweep sets `parties.count`, trials have as many rows as parties, and a wider view (one column
per party) is null where a trial had fewer. Columns: the
trial columns below, one column per swept parameter (named as in the sweep file), one
`duration.PHASE_s` column per phase the trial went through, and one column per metric the party
printed (named as the engine names it: `acc`, `precision weighted`). A metric that is not finite is
a float NaN or infinity in its column (see `seel.jsonio` for how it is kept on the way).
"""

from __future__ import annotations

from typing import Any

from seel.jsonio import number

# Columns a ledger line may lack (written before they existed): taken as they are, else null.
OPTIONAL_COLUMNS: tuple[str, ...] = (
    # measured as the trial ran (seel/capacity.py): the machine's mean busy fraction and CPU
    # pressure, the trial's CPU seconds and its processes' largest resident memory at once
    "machine_load",
    "cpu_pressure",
    "cpu_s",
    "peak_rss_mb",
    "node",  # the Ray node a trial ran on; null on the controller's machine
    # the trial that started the deployment it ran on (itself when fresh); null for an engine
    # without `reuse:`
    "deployment",
)
# The columns every row has, besides parameters, durations and metrics.
TRIAL_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "index",
    "repeat",
    "seed",
    "status",
    "phase",
    "reason",
    "attempts",
    "elapsed_s",
    "rounds_completed",
    "final_global_acc",
    "aggregator_exit",
    "party",
    "party_exit",
    *OPTIONAL_COLUMNS,
)
DURATION_PREFIX = "duration."
LOWER_IS_BETTER = ("loss", "error", "elapsed", "duration", "time")  # words in a column's name


def lower_is_better(column: str) -> bool:
    """Whether a smaller value of this metric or column is the better one (by its name)."""
    lowered = column.lower()
    return any(word in lowered for word in LOWER_IS_BETTER)


def duration_column(phase: str) -> str:
    """The column of a phase's duration in seconds: `duration.train_s`."""
    return f"{DURATION_PREFIX}{phase}_s"


def duration_phase(column: str) -> str | None:
    """The phase a duration column is of (`duration.train_s` -> `train`); None for another column."""
    if column.startswith(DURATION_PREFIX) and column.endswith("_s"):
        return column.removeprefix(DURATION_PREFIX).removesuffix("_s")
    return None


def is_metric_column(column: str, parameters: list[str]) -> bool:
    """Whether a results column holds a metric a party printed (by name; the type is not checked)."""
    return (
        column not in TRIAL_COLUMNS
        and column not in parameters
        and not column.startswith(DURATION_PREFIX)
    )


def result_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One ledger record (an outcome's JSON) as table rows, one per party."""
    accuracies = doc["round_accuracies"] or [None]
    trial: dict[str, Any] = {
        "trial_id": doc["trial_id"],
        "index": doc["index"],
        **doc["params"],
        "repeat": doc["repeat"],
        "seed": doc["seed"],
        "status": doc["status"],
        "phase": doc["phase"],
        "reason": doc["reason"],
        "attempts": doc["attempts"],
        "elapsed_s": number(doc["elapsed_s"]),
        **{duration_column(k): number(v) for k, v in doc["durations"].items()},
        "rounds_completed": doc["rounds_completed"],
        "final_global_acc": number(accuracies[-1]),
        "aggregator_exit": doc["aggregator_exit"],
        **{column: doc.get(column) for column in OPTIONAL_COLUMNS},
    }
    parties = doc.get("parties") or []
    if not parties:
        return [{**trial, "party": None, "party_exit": None}]
    return [
        {
            **trial,
            "party": p["index"],
            "party_exit": p["exit_code"],
            **{k: number(v) for k, v in p["metrics"].items()},
        }
        for p in parties
    ]
