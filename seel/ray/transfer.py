"""A trial directory sent from a node to the controller: a gzip'd tar, in bounded chunks.

What a trial leaves is small (configs, one transcript per process, a few KB each), but a transcript
may reach the child adapter's cap of 64 MB per process. So the node packs the directory into a
temporary file (gzip at level 1: console output shrinks about tenfold at little CPU), sends it in
chunks of at most CHUNK_BYTES, and the controller writes the chunks to a file of its own before
unpacking: neither side holds more than one chunk in memory, and the object store never holds a
whole large trial at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

CHUNK_BYTES = 4 << 20


def pack(trial_dir: Path) -> Path:
    """The directory's files in a gzip'd tar beside it (an empty archive if it does not exist)."""
    fd, name = tempfile.mkstemp(prefix=".pack-", suffix=".tar.gz", dir=trial_dir.parent)
    path = Path(name)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as tar,
        ):
            if trial_dir.is_dir():
                for item in sorted(trial_dir.iterdir()):
                    tar.add(item, arcname=item.name)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return path


def chunks(packed: Path) -> Iterator[bytes]:
    """A packed file in chunks of at most CHUNK_BYTES; the file is deleted after the last."""
    try:
        with packed.open("rb") as source:
            while chunk := source.read(CHUNK_BYTES):
                yield chunk
    finally:
        with contextlib.suppress(OSError):
            packed.unlink()


class Unpacker:
    """Receives a trial directory's chunks, then unpacks them over `dest`."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}-", suffix=".tar.gz", dir=dest.parent)
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def finish(self) -> None:
        """Unpack what was received into `dest`, as a local run would have left it: transcripts
        (`*.log`) of an earlier attempt are appended to, other files replaced."""
        try:
            self._file.close()
            self.dest.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}-", dir=self.dest.parent))
            try:
                with tarfile.open(self._path, "r:gz") as tar:
                    tar.extractall(staging, filter="data")
                for item in sorted(staging.iterdir()):
                    target = self.dest / item.name
                    if item.suffix == ".log" and target.is_file():
                        with item.open("rb") as src, target.open("ab") as dst:
                            shutil.copyfileobj(src, dst)
                    else:
                        item.replace(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            self.discard()

    def discard(self) -> None:
        self._file.close()
        with contextlib.suppress(OSError):
            self._path.unlink()


def remove(trial_dir: Path) -> None:
    """Delete a node's copy of a trial directory once it has been sent."""
    shutil.rmtree(trial_dir, ignore_errors=True)
