"""A slot's event stream, without Ray: `TrialWorker.run` driven as Ray drives it, an async
generator whose consumer takes its time with each item while the trial goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seel.outcome import Outcome, Status
from seel.ray import worker
from seel.space import TrialSpec


class _Context:
    def __init__(self, root: Path, emit: Callable[[Any], None]) -> None:
        self.root, self.emit = root, emit

    def trial_dir(self, trial_id: str) -> Path:
        return self.root / trial_id


class _Machine:
    deployments = None

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ctx: _Context | None = None

    def context(self, emit: Callable[[Any], None]) -> _Context:
        self.ctx = _Context(self.root, emit)
        return self.ctx


def _outcome(trial: TrialSpec) -> Outcome:
    return Outcome(
        trial_id=trial.trial_id, index=trial.index, params={}, repeat=0, seed=0,
        status=Status.OK, phase=None, reason="", attempts=1, started_at=0.0, elapsed_s=0.0,
        durations={}, rounds_completed=None, round_accuracies=(), aggregator_exit=0,
        parties=(), ports=(),
    )  # fmt: skip


def test_events_emitted_while_a_batch_is_being_read_are_sent_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two batches, each held by the consumer while the trial emits more; after the second the
    trial ends, so what it emitted meanwhile can only go out after its end."""

    async def scenario() -> list[Any]:
        holding = [asyncio.Event(), asyncio.Event()]  # the consumer holds batch i
        emitted = [asyncio.Event(), asyncio.Event()]  # the trial emitted while it did

        async def fake_run_trial(ctx: _Context, trial: TrialSpec, attempt: int, halt: Any) -> Any:
            ctx.emit("first")
            for i, word in enumerate(("second", "third")):
                await holding[i].wait()
                ctx.emit(word)
                emitted[i].set()
            return _outcome(trial)

        monkeypatch.setattr(worker, "run_trial", fake_run_trial)
        monkeypatch.setattr(worker, "node_name", lambda: "node-a")
        slot = worker.TrialWorker(plan=None, base_dir=str(tmp_path))  # type: ignore[arg-type]
        slot.machine = _Machine(tmp_path)  # type: ignore[assignment]
        (tmp_path / "t00000").mkdir()
        trial = TrialSpec(trial_id="t00000", index=0, params={}, repeat=0, seed=0)
        received: list[Any] = []
        batches = 0
        async for item in slot.run(trial, 1):
            if item[0] == "events":
                received.extend(item[1])
                if batches < 2:
                    holding[batches].set()
                    await emitted[batches].wait()
                batches += 1
            elif item[0] == "end":
                assert item[1].node == "node-a"
        return received

    assert asyncio.run(scenario()) == ["first", "second", "third"]
