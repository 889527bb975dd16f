"""Reliability suite: the `recovery` fixture and the summary of recovery times.

`make test` runs the quick scenarios; `make test-reliability` runs every file here, the long
ones marked `reliability_full` included. Set SEEL_RELIABILITY_REPORT=path.json to keep the
measured recovery times.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import defaultdict
from collections.abc import Callable

import pytest

_TIMES: dict[str, list[float]] = defaultdict(list)


@pytest.fixture
def recovery() -> Callable[[str, float], None]:
    """recovery(scenario, seconds): record how long the sweep took to recover from a fault."""

    def record(scenario: str, seconds: float) -> None:
        _TIMES[scenario].append(seconds)

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TIMES:
        return
    tr = terminalreporter
    tr.section("recovery times (s): median, max, n")
    for name in sorted(_TIMES):
        xs = _TIMES[name]
        tr.write_line(f"{name:<60} {statistics.median(xs):7.2f} {max(xs):7.2f} {len(xs):4d}")
    path = os.environ.get("SEEL_RELIABILITY_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(_TIMES, f, indent=2, sort_keys=True)
