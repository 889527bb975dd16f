"""Console log lines in IBM FL's shape: `time | version | LEVEL | logger | message`."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from seel import __version__

_LOGGER_WIDTH = 50


def format_line(level: str, logger: str, message: str, now: float | None = None) -> str:
    """Render one log line; `now` is a Unix time (default: the current time)."""
    t = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    millis = int((t - int(t)) * 1000)
    return (
        f"{stamp}.{millis:03d}Z | {__version__} | {level} | {logger:<{_LOGGER_WIDTH}} | {message}"
    )


class Logger:
    """Writes log lines for one named component to a stream, flushed at once."""

    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        self.name = name
        self._stream = stream

    def _emit(self, level: str, message: str) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(format_line(level, self.name, message) + "\n")
        stream.flush()

    def info(self, message: str) -> None:
        self._emit("INFO", message)

    def warning(self, message: str) -> None:
        self._emit("WARNING", message)

    def error(self, message: str) -> None:
        self._emit("ERROR", message)
