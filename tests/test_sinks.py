"""A sink that fails never ends a sweep: it is reported once on stderr and switched off."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pytest

from seel.events import Event, FanOut, IsolatedSink, SweepStopping, TrialStarted, isolated
from seel.render.jsonl import JsonLinesSink


@dataclass
class ListSink:
    events: list[Event] = field(default_factory=list)

    def emit(self, event: Event) -> None:
        self.events.append(event)


class Raises:
    name = "broken display"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.calls = 0

    def emit(self, event: Event) -> None:
        self.calls += 1
        raise self.exc


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


EVENTS = [SweepStopping("SIGINT"), SweepStopping("SIGTERM"), SweepStopping("SIGINT")]


def test_fan_out_reports_a_failing_sink_once_and_feeds_the_others() -> None:
    stderr = io.StringIO()
    broken, good = Raises(ValueError("cannot draw this")), ListSink()
    fan = FanOut(broken, good, stderr=stderr)
    for event in EVENTS:
        fan.emit(event)
    assert good.events == EVENTS
    assert broken.calls == 1  # switched off after its first error
    assert stderr.getvalue().splitlines() == [
        "seel: the broken display failed and is switched off, the sweep goes on: "
        "ValueError: cannot draw this"
    ]


def test_a_closed_pipe_under_the_json_writer_is_reported_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    sink = isolated(JsonLinesSink(ClosedPipe()))
    for attempt in (1, 2, 3):
        sink.emit(TrialStarted("t00000", {"x": 1}, 0, attempt))
    [line] = capsys.readouterr().err.splitlines()
    assert "the --json output failed" in line and "BrokenPipeError" in line


def test_isolated_wraps_once() -> None:
    guard = isolated(ListSink())
    assert isinstance(guard, IsolatedSink) and isolated(guard) is guard
    fan = FanOut(ListSink())
    assert isolated(fan) is fan


def test_interrupts_and_cancellation_are_not_swallowed() -> None:
    sink = isolated(Raises(KeyboardInterrupt()))  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        sink.emit(EVENTS[0])


def test_a_gone_stderr_does_not_raise_either() -> None:
    sink = IsolatedSink(Raises(ValueError("x")), stderr=ClosedPipe())
    sink.emit(EVENTS[0])
    assert isinstance(sink.error, ValueError)
