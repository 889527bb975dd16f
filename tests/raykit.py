"""Test kit for trials on Ray: a multi-node cluster on this machine, a controller run as the real
`seel` binary, and checks that no process of a run is left on any node.

Every node of a `ray.cluster_utils.Cluster` is a raylet of this machine, so "no process left on
any node" is checked by scanning this machine's /proc for the run's mark (SEEL_RUN_ID=<run id>),
which every process a trial starts carries, on whichever node it ran.

One cluster serves every test of a session that asks for the `ray_cluster` fixture
(tests/conftest.py): started by the first such test, stopped after the last. A test may add or
remove nodes (an odd node, a lost node); after it, the cluster is put back as it found it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import pytest

FAKE = Path(__file__).parent / "children" / "fakefl.py"
SEEL = [sys.executable, "-m", "seel.cli"]
SMALL_STORE = 80 << 20  # object store per node: what a test needs, far below the default


WORKERS = 3  # worker nodes of the shared cluster, of 1 CPU each: two busy, one to rerun on
NODES_SETTLE_S = 60.0  # for Ray to see a node go (one killed is noticed by missed heartbeats)


# In the environment of every process of a cluster started here: a test that checks what this
# process left running does not count a cluster that another test, earlier, started in it.
CLUSTER_MARK = "SEEL_TEST_RAY_CLUSTER=1"


def _marked() -> Any:
    """Processes started meanwhile carry CLUSTER_MARK."""
    key, value = CLUSTER_MARK.split("=")
    return mock.patch.dict(os.environ, {key: value})


def of_a_cluster(pid: int) -> bool:
    """Whether a process was started as part of a cluster of this module."""
    try:
        return CLUSTER_MARK.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def start_cluster(workers: list[dict[str, Any]]) -> Any:
    """A head that runs nothing (no CPUs) and one worker node per entry (add_node arguments)."""
    from ray.cluster_utils import Cluster

    with _marked():
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "include_dashboard": False,
                "object_store_memory": SMALL_STORE,
            },
        )
    for args in workers:
        add_worker(cluster, **args)
    cluster.wait_for_nodes()
    return cluster


def add_worker(cluster: Any, **args: Any) -> Any:
    """A worker node of 1 CPU (add_node arguments override)."""
    with _marked():
        return cluster.add_node(**{"num_cpus": 1, "object_store_memory": SMALL_STORE, **args})


class SharedCluster:
    """The session's cluster: started at the first `get`, stopped by `shutdown` (which may be
    called more than once)."""

    def __init__(self) -> None:
        self._cluster: Any = None
        self._closed = False

    def get(self) -> Any:
        assert not self._closed, "the shared Ray cluster was asked for after its last user"
        if self._cluster is None:
            self._cluster = start_cluster([{} for _ in range(WORKERS)])
        return self._cluster

    def shutdown(self) -> None:
        self._closed = True
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            cluster.shutdown()


@contextmanager
def restored(cluster: Any, put_back: bool = True) -> Iterator[None]:
    """A test on the cluster as the last one left it, once Ray has seen every change (a node a
    test killed is seen gone only after missed heartbeats: waited for here rather than after that
    test, so other tests run meanwhile). After the test, nodes it added are removed and nodes
    it removed are replaced by standard workers (unless not `put_back`: no test follows)."""
    cluster.wait_for_nodes(timeout=NODES_SETTLE_S)
    before = list(cluster.worker_nodes)
    try:
        yield
    finally:
        if put_back:
            for node in [n for n in cluster.worker_nodes if n not in before]:
                cluster.remove_node(node)
            for _ in range(len(before) - len(cluster.worker_nodes)):
                add_worker(cluster)


def fake_sweep(tmp: Path, agg_args: list[str], name: str = "ray-fake") -> Path:
    """A sweep of len(agg_args) trials on the fake builtin engine; trial i's aggregator gets
    agg_args[i] (JSON is YAML)."""
    agg = {"connection": {"info": {"ip": "127.0.0.1", "port": 5000}}, "fake": {"args": ""}}
    (tmp / "config_agg.yml").write_text(json.dumps(agg))
    parties = []
    for i in range(2):
        doc = {
            "aggregator": {"ip": "127.0.0.1", "port": 5000},
            "connection": {"info": {"ip": "127.0.0.1", "port": 8085 + i}},
            "data": {"info": {"party_index": i}},
            "fake": {"args": ""},
        }
        (tmp / f"config_party{i}.yml").write_text(json.dumps(doc))
        parties.append(f"config_party{i}.yml")

    def command(role: str) -> list[str]:
        return ["{python}", str(FAKE), "--role", role, "--style", "builtin", "{config}"]

    engine = {
        "extends": "builtin",
        "name": "fake-builtin",
        "python": sys.executable,
        "check": ["{python}", "-c", "pass"],
        "preload": [],
        "aggregator": {"command": command("aggregator"), "port_keys": ["connection.info.port"],
                       "stop_line": "STOP"},
        "party": {"command": command("party"), "port_keys": ["connection.info.port"],
                  "aggregator_port_keys": ["aggregator.port"], "stop_line": None},
        "validate": None,
        "stop": {"grace_s": 0.5, "term_grace_s": 0.5},
    }
    sweep = {
        "name": name,
        "engine": engine,
        "configs": {"aggregator": "config_agg.yml", "parties": parties},
        "parameters": {"fake.args": {"values": agg_args}},
        "timeouts": {"init": 20, "start": 20, "register": 20, "train": 120, "eval": 20, "stop": 20},
    }
    path = tmp / f"{name}.yml"
    path.write_text(json.dumps(sweep))
    return path


class Controller:
    """`seel run ... --json` as a subprocess, its events read as they come."""

    started: ClassVar[list[Controller]] = []  # so a failed test's is stopped at teardown

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [*SEEL, "run", *args, "--json"],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.events: list[dict[str, Any]] = []
        self.run_id: str | None = None
        self._stderr: str | None = None
        Controller.started.append(self)

    @classmethod
    def stop_all(cls) -> None:
        """SIGKILL and close every controller a test left running (one that failed midway)."""
        while cls.started:
            ctl = cls.started.pop()
            if ctl.proc.poll() is None:
                os.killpg(ctl.proc.pid, signal.SIGKILL)
            ctl.close()

    def _lines(self) -> Iterator[dict[str, Any]]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            doc = json.loads(line)
            self.events.append(doc)
            if doc["event"] == "sweep_started":
                self.run_id = str(doc["run_id"])
            yield doc

    def wait_for(self, done: Callable[[list[dict[str, Any]]], bool]) -> None:
        """Read events until `done(all events so far)`; fails if the controller ends first."""
        if done(self.events):
            return
        for _ in self._lines():
            if done(self.events):
                return
        raise AssertionError(f"the controller ended first: {self.stderr()}")

    def finish(self) -> int:
        """Read the rest of the events; the exit code (the pipes are closed)."""
        for _ in self._lines():
            pass
        return self.close()

    def close(self) -> int:
        code = self.proc.wait()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        if self._stderr is None:
            self._stderr = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code

    def stderr(self) -> str:
        self.close()
        return self._stderr or ""

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)


@pytest.fixture(autouse=True)
def controllers_stopped() -> Iterator[None]:
    """Import into a test module: no controller outlives its test, passed or failed."""
    yield
    Controller.stop_all()


def in_phase(phase: str, count: int) -> Callable[[list[dict[str, Any]]], bool]:
    """True once `count` different trials have reached `phase`."""

    def done(events: list[dict[str, Any]]) -> bool:
        trials = {e["trial"] for e in events if e["event"] == "phase" and e["phase"] == phase}
        return len(trials) >= count

    return done


def run_processes(run_id: str) -> list[int]:
    """Live processes of this machine started by a run (on any node of a local cluster)."""
    mark = f"SEEL_RUN_ID={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if stat[0] != "Z" and mark in environ:
            found.append(int(entry))
    return found


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def node_of(cluster: Any, pid: int) -> Any:
    """The worker node of a cluster that a process runs on (its raylet is an ancestor)."""
    raylets = {n.all_processes["raylet"][0].process.pid: n for n in cluster.worker_nodes}
    while pid > 1:
        if pid in raylets:
            return raylets[pid]
        pid = _ppid(pid)
    raise AssertionError("not a process of any worker node")


def wait_gone(run_id: str, within_s: float) -> tuple[list[int], float]:
    """Wait (polling /proc: these are not our children) until no process of the run is left;
    what is left after `within_s`, and how long it took."""
    start = time.monotonic()
    left = run_processes(run_id)
    while left and time.monotonic() - start < within_s:
        time.sleep(0.05)
        left = run_processes(run_id)
    return left, time.monotonic() - start


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def ledger(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]
