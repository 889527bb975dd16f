"""What a finished trial is: a frozen outcome with a status, the phase it ended in and metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from seel.jsonio import number


class Status(StrEnum):
    """How a trial ended. A timeout is a result, not an error."""

    OK = "ok"
    TIMEOUT = "timeout"
    CRASHED = "crashed"
    FAILED = "failed"
    PRUNED = "pruned"  # stopped early by an optimizer on its round values: a result
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class PartyResult:
    """One party's side of a trial."""

    index: int
    exit_code: int | None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """A finished trial. `phase` is where a non-ok trial ended; `reason` says why in one line."""

    trial_id: str
    index: int
    params: dict[str, Any]
    repeat: int
    seed: int
    status: Status
    phase: str | None
    reason: str
    attempts: int
    started_at: float
    elapsed_s: float
    durations: dict[str, float]
    rounds_completed: int | None
    round_accuracies: tuple[float, ...]
    aggregator_exit: int | None
    parties: tuple[PartyResult, ...]
    ports: tuple[int, ...]
    retryable: bool = False
    # measured as it ran (seel/capacity.py); None when not measured
    machine_load: float | None = None  # the machine's mean busy fraction, 0-1
    cpu_s: float | None = None  # CPU seconds of the trial's processes
    peak_rss_mb: float | None = None  # their largest resident memory at once
    node: str | None = None  # the Ray node it ran on; None on the controller's machine
    cpu_pressure: float | None = None  # mean share of its time some task waited for a core, 0-1
    # the trial that started the processes it ran on (itself when fresh); None for an engine
    # without `reuse:` (seel/deployments.py)
    deployment: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ledger's line)."""
        out = asdict(self)
        out["status"] = str(self.status)
        out["round_accuracies"] = list(self.round_accuracies)
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Outcome:
        """An outcome from its ledger line (non-finite numbers spelled as strings read back)."""
        parties = tuple(
            PartyResult(
                int(p["index"]),
                p["exit_code"],
                {str(k): number(v) for k, v in p.get("metrics", {}).items()},
            )
            for p in doc["parties"]
        )
        fields = {f: doc[f] for f in cls.__dataclass_fields__ if f in doc}
        return cls(
            **{
                **fields,
                "status": Status(doc["status"]),
                "parties": parties,
                "round_accuracies": tuple(number(a) for a in doc["round_accuracies"]),
                "durations": {str(k): number(v) for k, v in doc["durations"].items()},
                "ports": tuple(doc["ports"]),
            }
        )
