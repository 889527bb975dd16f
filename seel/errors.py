"""SEEL's error types: one base, with specific subclasses the CLI turns into one-line messages."""

from __future__ import annotations


class SeelError(Exception):
    """Base of every error SEEL raises on purpose."""


class SpecError(SeelError):
    """Bad input: names the file and the dotted key, and says what is wrong."""

    def __init__(self, file: object, key: str, why: str) -> None:
        self.file = str(file)
        self.key = key
        self.why = why
        where = f"{self.file}: {key}" if key else self.file
        super().__init__(one_line(f"{where}: {why}"))


def one_line(text: str) -> str:
    """`text` with line breaks and other unprintable characters escaped, as `repr` shows them."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class PortUnavailable(SeelError):
    """No block of free ports could be reserved in the range."""


class RunDirError(SeelError):
    """A run directory that cannot be used (another sweep's, or locked by a live controller)."""


class StorageError(SeelError):
    """A file of the run directory could not be written (a full disk, a lost mount)."""


class ClusterLost(SeelError):
    """No machine is left to run trials on (every Ray node that could hold a trial is gone)."""
