"""Why a process failed, read from its output: the first error it printed, not the last line.

A process that fails usually prints its cause first and follow-on noise after it: IBM FL logs
`ERROR ... Unable to load training data ...`, then tracebacks, then an `AttributeError` from a
half-built object, then its web server's shutdown lines. The reason a trial records is the first of

1. the exception line that ends the first traceback (`OSError: ...`),
2. the first log line at level ERROR or CRITICAL (its message, without stamp and logger), and
3. the interpreter's own complaint before any code ran (`/venv/bin/python: No module named
   ibmfl`, `... can't open file ...`),

whichever the process printed first. The full output stays in the transcript. `FirstError` reads
lines as they arrive (a child keeps only a bounded tail, so the cause must be caught on the way
past); `first_error` applies it to a list of lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_REASON_CHARS = 300

# Terminal escapes: CSI sequences and 2-byte escapes (also stripped from output by seel.child)
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")
_TRACEBACK = "Traceback (most recent call last)"
# The line a traceback ends with: `Name`, `module.Name` or either with `: message`.
_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?::(?:\s.*)?)?$")
# A log line at level ERROR or CRITICAL in the common layouts:
#   2024-01-01T00:00:00Z | 2.0.1 | ERROR | ibmfl.x | message        (IBM FL, seel.fl)
#   2024-01-01 00:00:00.000 ERROR  ibmfl.x :: message                (IBM FL's basicConfig)
#   2024-01-01 00:00:00,000 - name - ERROR - message                  (logging's example format)
#   ERROR:root:message                                                (logging's default)
_LEVEL = re.compile(r"(?:^|[\s|\[\]:,-])(?:ERROR|CRITICAL|FATAL)(?=$|[\s|:\]-])(?P<rest>.*)$")
_PIPE_NAME = re.compile(r"^\s*\|\s*[\w.<>-]+\s*\|\s?(?P<msg>.*)$")
_COLONS_NAME = re.compile(r"^\s+[\w.<>-]+\s+::\s?(?P<msg>.*)$")
_DASH = re.compile(r"^\s+-\s+(?P<msg>.*)$")
_DEFAULT = re.compile(r"^:[\w.<>-]+:(?P<msg>.*)$")
_LEAD = re.compile(r"^[\s|:\]-]+")
# `/path/to/python3.11: Error while finding module specification for 'x' (...)`
_INTERPRETER = re.compile(r"^\S*python[\d.]*: (?P<msg>\S.*)$")
# A level word before ERROR means ERROR is part of the message (`INFO | x | no ERROR found`).
_OTHER_LEVEL = re.compile(r"\b(?:DEBUG|INFO|WARNING|WARN)\b")


def clean(text: str) -> str:
    """A line as a person reads it: no terminal escapes, no carriage returns, no edge spaces."""
    return ANSI.sub("", text).replace("\r", "").strip()


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= MAX_REASON_CHARS:
        return text
    return text[: MAX_REASON_CHARS - 3].rstrip() + "..."


def error_message(line: str) -> str | None:
    """The message of a log line at level ERROR or CRITICAL; None for any other line."""
    text = clean(line)
    if text.startswith(_TRACEBACK):
        return None
    match = _LEVEL.search(text)
    if match is None or _OTHER_LEVEL.search(text, 0, match.start()):
        return None
    rest = match.group("rest")
    for layout in (_PIPE_NAME, _COLONS_NAME, _DEFAULT):
        named = layout.match(rest)
        if named is not None:
            rest = named.group("msg")
            break
    else:
        dashed = _DASH.match(rest)
        rest = dashed.group("msg") if dashed is not None else _LEAD.sub("", rest)
    message = rest.strip()
    return _shorten(message) if message else None


class FirstError:
    """Reads a process's lines in order and keeps the first error among them (see the module)."""

    def __init__(self) -> None:
        self.cause: str | None = None
        self._in_traceback = False

    def feed(self, line: str) -> None:
        """Take the next line of output."""
        if self.cause is not None:
            return
        raw = ANSI.sub("", line).replace("\r", "")
        text = raw.strip()
        if self._in_traceback:
            # Frames and source lines are indented; a line that is not, and reads as an
            # exception, ends the traceback. Anything else (a log line another thread printed
            # into the middle of it, a blank line) is passed over.
            if text and not raw[:1].isspace() and _EXCEPTION.match(text):
                self.cause = _shorten(text)
            return
        if _TRACEBACK in text:
            self._in_traceback = True
            return
        message = error_message(text)
        if message is None:
            complaint = _INTERPRETER.match(text)
            message = _shorten(complaint.group("msg")) if complaint else None
        if message is not None:
            self.cause = message

    @property
    def in_traceback(self) -> bool:
        """Whether a traceback has begun and its exception line has not been seen yet."""
        return self._in_traceback and self.cause is None


def first_error(lines: Iterable[str]) -> str | None:
    """The first error in these lines (see the module), or None if they hold none."""
    scan = FirstError()
    for line in lines:
        scan.feed(line)
        if scan.cause is not None:
            break
    return scan.cause


def trial_reason(child: str, cause: str | None, fallback: str) -> str:
    """A failed trial's reason: the failing process and its first error, else `fallback`."""
    return f"{child}: {cause}" if cause else fallback
