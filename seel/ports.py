"""Blocks of free TCP ports, shared safely between trials and between SEEL processes.

A port is handed out only if (1) no live SEEL process holds it in the shared registry and (2) a
real bind on it succeeds now. The registry is a JSON file guarded by an exclusive `flock`, so two
`seel run` processes on one machine never hand out the same port; entries of dead processes are
dropped. A port can still be taken by an unrelated program between the check and the child's bind:
the trial then fails with "Address already in use" and is retried on a new block.

The default range sits below Linux's ephemeral range (32768-60999), so outgoing connections of the
trials themselves cannot occupy ports handed out here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from seel.errors import PortUnavailable

DEFAULT_RANGE = (20000, 32000)
_RANGE = re.compile(r"\s*([0-9]+)\s*-\s*([0-9]+)\s*")


def parse_port_range(text: str) -> tuple[int, int]:
    """`A-B` as (A, B); ValueError says what is wrong."""
    match = _RANGE.fullmatch(text)
    if match is None:
        raise ValueError(f'expected "A-B" such as "6000-6999", not {text!r}')
    first, last = int(match.group(1)), int(match.group(2))
    if not 1024 <= first <= last <= 65535:
        raise ValueError(f"expected 1024 <= A <= B <= 65535, not {first}-{last}")
    return first, last


def default_registry_dir() -> Path:
    """Where the port registry lives: $SEEL_PORTS_DIR, else a per-user folder in the temp dir."""
    env = os.environ.get("SEEL_PORTS_DIR")
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / f"seel-ports-{os.getuid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """True if a listening socket could bind `host:port` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Reserves and releases blocks of ports within a range."""

    def __init__(
        self, port_range: tuple[int, int] | None = None, registry_dir: Path | None = None
    ) -> None:
        self.low, self.high = port_range or DEFAULT_RANGE
        self.dir = registry_dir or default_registry_dir()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._registry = self.dir / "registry.json"
        self._lock = self.dir / "lock"
        self._rng = random.Random()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, int]]:
        with self._lock.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    held: dict[str, int] = json.loads(self._registry.read_text() or "{}")
                except (FileNotFoundError, json.JSONDecodeError):
                    held = {}
                live = {port: pid for port, pid in held.items() if _alive(pid)}
                yield live
                tmp = self._registry.with_suffix(".tmp")
                tmp.write_text(json.dumps(live))
                tmp.replace(self._registry)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def reserve(self, n: int) -> list[int]:
        """Reserve `n` ports for this process; PortUnavailable if the range has too few free."""
        with self._locked() as held:
            span = self.high - self.low + 1
            start = self._rng.randrange(span)
            got: list[int] = []
            for offset in range(span):
                port = self.low + (start + offset) % span
                if str(port) in held or not bindable(port):
                    continue
                got.append(port)
                if len(got) == n:
                    break
            if len(got) < n:
                raise PortUnavailable(
                    f"only {len(got)} of {n} free ports in {self.low}-{self.high}"
                )
            for port in got:
                held[str(port)] = os.getpid()
            return got

    def release(self, ports: list[int]) -> None:
        """Give ports back to the registry."""
        with self._locked() as held:
            for port in ports:
                held.pop(str(port), None)
