"""The dashboard's heatmap: a grid's listed values as they are, a search's sampled floats binned."""

from __future__ import annotations

import io

from rich.console import Console

from seel.render.live import LiveSink, bin_axis


def test_few_values_are_their_own_columns() -> None:
    labels, column = bin_axis({0.1, 0.5, 0.9})
    assert labels == ["0.1", "0.5", "0.9"]
    assert [column(v) for v in (0.1, 0.5, 0.9, 0.3)] == [0, 1, 2, None]


def test_many_floats_are_binned_by_width_or_by_ratio_across_decades() -> None:
    labels, column = bin_axis({1 + 0.1 * i for i in range(21)}, bins=3)  # 1.0 .. 3.0
    assert labels == ["1-1.7", "1.7-2.3", "2.3-3"]
    assert [column(v) for v in (1.0, 2.0, 3.0, "x")] == [0, 1, 2, None]
    lrs = {10 ** (-4 + i / 4) for i in range(17)}  # 1e-4 .. 1, evenly in log
    labels, column = bin_axis(lrs, bins=4)
    assert labels == ["0.0001-0.001", "0.001-0.01", "0.01-0.1", "0.1-1"]
    assert [column(v) for v in (1e-4, 0.003, 0.05, 1.0)] == [0, 1, 2, 3]


def test_a_search_heatmap_pools_trials_in_bins() -> None:
    sink = LiveSink(Console(file=io.StringIO(), width=200, record=True))
    state = sink.state
    state.parameters = {"lr": [], "mom": []}
    state.budget = True
    for i in range(40):  # 40 distinct learning rates, two momenta
        state.cells[(10 ** (-4 + i / 10), 0.9 if i % 2 else 0.5)] = [i / 40]
    heat = sink._heatmap()
    assert heat is not None
    sink.console.print(heat)
    text = sink.console.export_text()
    assert "0.0001-" in text and text.count("·") == 0  # binned: every cell has trials
    header = next(line for line in text.splitlines() if "0.0001-" in line)
    assert len([word for word in header.split() if "-" in word]) == 8  # 8 ranges, not 40 columns
