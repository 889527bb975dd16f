"""Test kit for the built-in engine: configs from dicts and processes on ptys, driven by markers."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pexpect

TIMEOUT_S = 20


def free_ports(n: int) -> list[int]:
    """Ports that were free a moment ago (bound to 0, then released)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def agg_doc(port: int, **global_params: Any) -> dict[str, Any]:
    g = {"rounds": 3, "num_parties": 2, "perc_quorum": 1.0, **global_params}
    return {
        "connection": {"name": "FlaskConnection", "info": {"ip": "127.0.0.1", "port": port}},
        "fusion": {"name": "IterAvgFusionHandler"},
        "data": {"info": {"dataset": "digits", "seed": 42}},
        "model": {"name": "logistic"},
        "hyperparams": {
            "global": g,
            "local": {"training": {"epochs": 2, "batch_size": 32}, "optimizer": {"lr": 0.5}},
        },
    }


def party_doc(index: int, n: int, agg_port: int, port: int, **simulation: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "aggregator": {"ip": "127.0.0.1", "port": agg_port},
        "connection": {"name": "FlaskConnection", "info": {"ip": "127.0.0.1", "port": port}},
        "data": {"info": {"dataset": "digits", "seed": 42, "num_parties": n, "party_index": index}},
        "model": {"name": "logistic"},
    }
    if simulation:
        doc["simulation"] = simulation
    return doc


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc, indent=2))  # JSON is YAML
    return path


class Proc:
    """One engine process on a pty."""

    def __init__(self, module: str, config: Path, cwd: Path) -> None:
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", module, str(config)],
            cwd=str(cwd),
            encoding="utf-8",
            codec_errors="replace",
            timeout=TIMEOUT_S,
            echo=False,
            dimensions=(50, 1000),
        )

    def send(self, line: str) -> None:
        self.child.sendline(line)

    def expect(self, marker: str, timeout: float = TIMEOUT_S) -> str:
        """Wait for `marker`; return the whole line it is on."""
        self.child.expect_exact(marker, timeout=timeout)
        head = str(self.child.before).rsplit("\n", 1)[-1]
        rest = self.child.readline()
        return head + marker + rest.rstrip("\r\n")

    def expect_line(self, pattern: str, timeout: float = TIMEOUT_S) -> str:
        """Wait for a regex; return the match."""
        self.child.expect(pattern, timeout=timeout)
        return str(self.child.after)

    def exit_code(self, timeout: float = TIMEOUT_S) -> int:
        """Wait for the process to end; return its exit status."""
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.child.wait()
        status = self.child.exitstatus
        return -int(self.child.signalstatus) if status is None else int(status)

    def output(self) -> str:
        return str(self.child.before or "")

    def kill(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


class Federation:
    """An aggregator and its parties, each a real process; everything is killed on exit."""

    def __init__(self, tmp: Path, n_parties: int = 2, agg: dict[str, Any] | None = None,
                 sims: dict[int, dict[str, Any]] | None = None) -> None:
        ports = free_ports(n_parties + 1)
        self.tmp = tmp
        self.agg_config = write_yaml(tmp / "config_agg.yml", agg_doc(ports[0], num_parties=n_parties, **(agg or {})))
        self.party_configs = [
            write_yaml(tmp / f"config_party{i}.yml", party_doc(i, n_parties, ports[0], ports[i + 1], **(sims or {}).get(i, {})))
            for i in range(n_parties)
        ]
        self.procs: list[Proc] = []

    def spawn(self) -> tuple[Proc, list[Proc]]:
        agg = Proc("seel.fl.aggregator", self.agg_config, self.tmp)
        parties = [Proc("seel.fl.party", c, self.tmp) for c in self.party_configs]
        self.procs = [agg, *parties]
        return agg, parties

    def up(self) -> tuple[Proc, list[Proc]]:
        """Spawn everything and take it to the point where TRAIN may be sent."""
        agg, parties = self.spawn()
        self.start(agg, parties, register=True)
        return agg, parties

    def start(self, agg: Proc, parties: list[Proc], register: bool) -> None:
        """START the spawned aggregator and parties, and REGISTER the parties if asked."""
        agg.expect("Aggregator initialization successful")
        agg.send("START")
        agg.expect("Aggregator start successful")
        for p in parties:
            p.expect("Party initialization successful")
            p.send("START")
            p.expect("Party start successful")
            if register:
                p.send("REGISTER")
                p.expect("Registration Successful")

    def kill_all(self) -> None:
        for p in self.procs:
            p.kill()


@contextmanager
def federation(tmp: Path, **kwargs: Any) -> Iterator[Federation]:
    fed = Federation(tmp, **kwargs)
    try:
        yield fed
    finally:
        fed.kill_all()
