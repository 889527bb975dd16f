"""Rounds as an aggregator's output tells them: a finished round's number and value.

An engine either prints one line per finished round (`round:` with the round's number and the
global accuracy), or, with `round_records:`, marks each round's start with `round:` and prints the
round's records (dicts) on later lines; the round is finished when a record holds the engine's
`round_value` key, whose value is the round's value. All records of a round are kept.
"""

from __future__ import annotations

import json
from pathlib import Path

from seel.engine import Engine, RoundLine, parse_metrics


class RoundTracker:
    """Reads an aggregator's lines; says when a round finished."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.current: int | None = None
        self.rounds: int | None = None
        self.records: dict[int, dict[str, float]] = {}
        self._done: set[int] = set()
        self.started = 0  # the latest round known to have started

    def feed(self, text: str) -> RoundLine | None:
        """The round this line finishes, if it finishes one."""
        eng = self.engine
        if eng.round_records is None:
            finished = eng.round_line(text)
            if finished is not None:  # the next one starts
                self.started = max(self.started, finished.round + 1)
            return finished
        started = eng.round_line(text)
        if started is not None:
            self.current, self.rounds = started.round, started.rounds
            self.started = max(self.started, started.round)
            return None
        match = eng.round_records.search(text)
        if match is None or self.current is None:
            return None
        record = parse_metrics(match.group("dict"))
        if not record:
            return None
        self.records.setdefault(self.current, {}).update(record)
        key = eng.round_value
        if key is None or key not in record or self.current in self._done:
            return None
        self._done.add(self.current)
        return RoundLine(self.current, self.rounds, record[key])

    def write(self, path: Path) -> None:
        """Each round's records, one JSON line per round (nothing if there are none)."""
        if not self.records:
            return
        lines = [
            json.dumps({"round": r, "records": rec}, allow_nan=True)
            for r, rec in sorted(self.records.items())
        ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
