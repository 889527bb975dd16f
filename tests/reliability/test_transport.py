"""The built-in engine's transport under hostile input, with real processes.

- Processes listen on loopback unless their config names another address.
- Malformed, oversized and unauthenticated frames are rejected with a logged line; the process
  lives on and the trial still completes, with no traceback anywhere.
- Nothing is ever unpickled: pickles and object arrays are rejected unopened, and no module of
  SEEL can unpickle or evaluate (checked on the source).
- What children print is read as a literal, never evaluated.
"""

from __future__ import annotations

import ast
import asyncio
import io
import json
import pickle
import shlex
import socket
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seel.events import Event
from seel.run import RunSettings, run_sweep
from tests.flkit import Federation, Proc, agg_doc, free_ports, party_doc, write_yaml
from tests.reliability.kit import assert_ledger_intact, assert_run_clean

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "children" / "fakefl.py"
LIMIT_MB = 0.05  # the engine's own messages are ~6 kB; hostile ones are tested at this limit
LIMIT = int(LIMIT_MB * (1 << 20))
TRACEBACK = "Traceback (most recent call last)"
_PREFIX = struct.Struct(">4sIQ")


# -- sockets and frames ---------------------------------------------------------------------


def listening(port: int) -> set[str]:
    """Addresses with a TCP socket listening on `port`, read from /proc/net/tcp and tcp6."""
    found = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = b"".join(
                struct.pack("<I", int(address[i : i + 8], 16)) for i in range(0, len(address), 8)
            )
            found.add(socket.inet_ntop(family, raw))
    return found


def frame(header: dict[str, Any] | bytes, body: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return _PREFIX.pack(b"SEFL", len(raw), len(body)) + raw + body


def send(port: int, data: bytes) -> int:
    """Send `data` on a new connection and half-close it; return once the server has closed it.

    Returns our port, which the aggregator's rejection line names.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        ours = int(conn.getsockname()[1])
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass
        except ConnectionResetError:
            pass  # the server stopped reading at a bad prefix and closed on unread data
    return ours


def npy(array: np.ndarray[Any, Any], allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def with_arrays(kind: str, fields: dict[str, Any], *blobs: bytes) -> bytes:
    header = {"kind": kind, "fields": fields, "arrays": [len(b) for b in blobs]}
    return frame(header, b"".join(blobs))


class Touch:
    """Unpickling this creates a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


# -- processes --------------------------------------------------------------------------------


def expect_rejection(proc: Proc, line: str) -> None:
    """The rejection line, and no traceback (an unhandled error in the handler) before it."""
    index = proc.child.expect_exact([line, TRACEBACK, "Unhandled exception"], timeout=20)
    assert index == 0, f"{proc.child.after}: {proc.child.before[-2000:]}"


def config_doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def port_of(path: Path) -> int:
    return int(config_doc(path)["connection"]["info"]["port"])


@contextmanager
def limited_federation(
    tmp: Path,
) -> Iterator[tuple[Federation, Proc, list[Proc], list[io.StringIO]]]:
    """Aggregator and two parties, each with a message limit of LIMIT_MB, started, not registered.

    Yields the transcripts too: everything each process printed, for the final traceback check.
    """
    fed = Federation(tmp, n_parties=2, agg={"rounds": 2})
    for path in (fed.agg_config, *fed.party_configs):
        doc = config_doc(path)
        doc["transport"] = {"max_message_mb": LIMIT_MB}
        write_yaml(path, doc)
    try:
        agg, parties = fed.spawn()
        logs = []
        for proc in (agg, *parties):
            proc.child.logfile_read = io.StringIO()
            logs.append(proc.child.logfile_read)
        fed.start(agg, parties, register=False)
        yield fed, agg, parties, logs
    finally:
        fed.kill_all()


def register(parties: list[Proc]) -> None:
    for p in parties:
        p.send("REGISTER")
        p.expect("Registration Successful")


def complete_the_trial(agg: Proc, parties: list[Proc], logs: list[io.StringIO]) -> None:
    """TRAIN, EVAL and STOP as a sweep drives them; every process exits 0 without a traceback."""
    agg.send("TRAIN")
    agg.expect("Finished round 2 of 2")
    agg.expect("Finished Global Training")
    agg.send("EVAL")
    for p in parties:
        line = p.expect("'acc': ")
        assert ast.literal_eval(line[line.index("{") :])["acc"] > 0.5
    agg.expect("Finished eval requests")
    agg.send("STOP")
    agg.expect("Aggregator stop successful")
    assert [p.exit_code() for p in parties] == [0, 0]
    assert agg.exit_code() == 0
    for log in logs:
        assert TRACEBACK not in log.getvalue(), log.getvalue()[-3000:]


# -- (a) where processes listen ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["absent", "null"])
def test_processes_listen_on_loopback_unless_told_otherwise(tmp_path: Path, how: str) -> None:
    agg_port, party_port = free_ports(2)
    agg = agg_doc(agg_port, num_parties=1)
    party = party_doc(0, 1, agg_port, party_port)
    for section in (agg["connection"]["info"], party["connection"]["info"], party["aggregator"]):
        if how == "absent":
            del section["ip"]
        else:
            section["ip"] = None
    aggregator = Proc("seel.fl.aggregator", write_yaml(tmp_path / "agg.yml", agg), tmp_path)
    member = Proc("seel.fl.party", write_yaml(tmp_path / "party.yml", party), tmp_path)
    try:
        aggregator.expect("Aggregator initialization successful")
        aggregator.send("START")
        assert f"Listening on 127.0.0.1:{agg_port}" in aggregator.expect("Listening on ")
        aggregator.expect("Aggregator start successful")
        member.expect("Party initialization successful")
        member.send("START")
        assert f"Listening on 127.0.0.1:{party_port}" in member.expect("Listening on ")
        member.expect("Party start successful")

        assert listening(agg_port) == {"127.0.0.1"}
        assert listening(party_port) == {"127.0.0.1"}

        member.send("REGISTER")  # and the party finds the aggregator on loopback by default
        member.expect("Registration Successful")
        aggregator.send("STOP")
        aggregator.expect("Aggregator stop successful")
        assert member.exit_code() == 0
        assert aggregator.exit_code() == 0
    finally:
        aggregator.kill()
        member.kill()


def test_an_address_given_is_the_address_used(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    doc = agg_doc(port)
    doc["connection"]["info"]["ip"] = "0.0.0.0"
    aggregator = Proc("seel.fl.aggregator", write_yaml(tmp_path / "agg.yml", doc), tmp_path)
    try:
        aggregator.expect("Aggregator initialization successful")
        aggregator.send("START")
        aggregator.expect("Aggregator start successful")
        assert listening(port) == {"0.0.0.0"}
        aggregator.send("STOP")
        assert aggregator.exit_code() == 0
    finally:
        aggregator.kill()


# -- (b) hostile frames -----------------------------------------------------------------------


def padded_to_limit(kind: str) -> bytes:
    """A well-formed frame of exactly LIMIT bytes after the prefix."""
    header = {"kind": kind, "fields": {"pad": ""}, "arrays": []}
    header["fields"]["pad"] = "x" * (LIMIT - len(json.dumps(header).encode()))
    data = frame(header)
    assert len(data) == _PREFIX.size + LIMIT
    return data


AGGREGATOR_FRAMES = [
    ("oversized", _PREFIX.pack(b"SEFL", 10, LIMIT - 9), f"over the limit of {LIMIT}"),
    (
        "at the limit",
        padded_to_limit("hello"),
        "unexpected 'hello' message (only registrations are accepted)",
    ),
    ("cut short", _PREFIX.pack(b"SEFL", 100, 0) + b'{"kind": ', "frame cut short"),
    ("header nested too deep", frame(b"[" * 20_000 + b"]" * 20_000), "header is not JSON"),
    (
        "header with a 5000-digit int",
        frame(b'{"kind": ' + b"7" * 5000 + b"}"),
        "header is not JSON",
    ),
    ("header not utf-8", frame(b"\xff\xfe\x00{"), "header is not JSON"),
    (
        "array claiming terabytes",
        with_arrays("register", {}, npy_header((10**12,)) + b"\0" * 8),
        "bad array: its header declares 8000000000000 bytes",
    ),
    (
        "array header that is code",
        with_arrays(
            "register",
            {},
            b"\x93NUMPY\x01\x00"
            + struct.pack("<H", 70)
            + b"{'descr': __import__('os').getcwd(), 'shape': (1,)}".ljust(69)
            + b"\n",
        ),
        "bad array",
    ),
    (
        "a party's reply sent to the aggregator",
        with_arrays("train_reply", {"round": 1, "n_samples": 5}, npy(np.zeros(3))),
        "unexpected 'train_reply' message",
    ),
    (
        "registration without an endpoint",
        frame({"kind": "register", "fields": {"n_samples": 3}}),
        "registration lacks host, port or n_samples",
    ),
]


def test_aggregator_rejects_hostile_frames_and_the_trial_completes(tmp_path: Path) -> None:
    with limited_federation(tmp_path) as (fed, agg, parties, logs):
        port = port_of(fed.agg_config)
        # a connection that never sends a byte must not hold anything up
        with socket.create_connection(("127.0.0.1", port)):
            register(parties)
            for name, data, why in AGGREGATOR_FRAMES:
                ours = send(port, data)
                expect_rejection(agg, f"Rejected a message from 127.0.0.1:{ours}: ")
                line = agg.child.readline()
                assert why in line, (name, line)
            complete_the_trial(agg, parties, logs)


def party_frames(token: Any) -> list[tuple[str, bytes, str]]:
    fields = {} if token is ... else {"token": token}
    return [
        (kind, frame({"kind": kind, "fields": fields}), f"'{kind}' request without this party's")
        for kind in ("train", "eval", "sync", "save", "stop")
    ]


def test_party_rejects_requests_without_its_token_and_the_trial_completes(tmp_path: Path) -> None:
    with limited_federation(tmp_path) as (fed, agg, parties, logs):
        ports = [port_of(c) for c in fed.party_configs]
        # before registering, a party has no token: a null one must not match it
        for _name, data, why in party_frames(None):
            send(ports[1], data)
            expect_rejection(parties[1], f"Rejected a message: {why}")
        register(parties)
        hostile = [
            *party_frames(...),
            *party_frames("0" * 32),
            *party_frames(["any"]),
            ("oversized", _PREFIX.pack(b"SEFL", 10, LIMIT - 9), f"over the limit of {LIMIT}"),
            ("at the limit", padded_to_limit("stop"), "'stop' request without this party's"),
            ("not a frame", b"POST /stop HTTP/1.1\r\n\r\n", "not a seel.fl frame"),
            *(f for f in AGGREGATOR_FRAMES if f[0].startswith(("header", "array"))),
            (
                "weights without a token",
                with_arrays("train", {"round": 1}, npy(np.full((64, 10), 1e300))),
                "'train' request without this party's",
            ),
        ]
        for name, data, why in hostile:
            send(ports[0], data)
            expect_rejection(parties[0], "Rejected a message: ")
            line = parties[0].child.readline()
            assert why in line, (name, line)
        assert parties[0].child.isalive()  # no unauthenticated stop got through
        complete_the_trial(agg, parties, logs)
        assert not list(tmp_path.glob("party*_model_*.npz"))  # nor an unauthenticated save


# -- (c) nothing is unpickled -----------------------------------------------------------------


def test_pickles_are_rejected_unopened(tmp_path: Path) -> None:
    def raw_pickle(path: Path) -> bytes:
        return pickle.dumps(Touch(path))

    def object_array(path: Path) -> bytes:
        return npy(np.array([Touch(path), 1], dtype=object), allow_pickle=True)

    # the control: both payloads do create their file when loaded the unsafe way
    pickle.loads(raw_pickle(tmp_path / "control1"))
    np.load(io.BytesIO(object_array(tmp_path / "control2")), allow_pickle=True)
    assert (tmp_path / "control1").exists() and (tmp_path / "control2").exists()

    sentinel = tmp_path / "unpickled"

    frames = [
        (
            "a raw pickle as an array",
            with_arrays("register", {}, raw_pickle(sentinel)),
            "bad array",
        ),
        (
            "an object array",
            with_arrays("register", {}, object_array(sentinel)),
            "bad array",
        ),
        ("a pickle as the header", frame(raw_pickle(sentinel)), "header is not JSON"),
    ]
    with limited_federation(tmp_path) as (fed, agg, parties, logs):
        register(parties)
        party_port = port_of(fed.party_configs[0])
        for name, data, why in frames:
            ours = send(port_of(fed.agg_config), data)
            expect_rejection(agg, f"Rejected a message from 127.0.0.1:{ours}: {why}")
            send(party_port, data.replace(b'"register"', b'"train"   '))
            expect_rejection(parties[0], f"Rejected a message: {why}")
            assert not sentinel.exists(), name
        complete_the_trial(agg, parties, logs)
    assert not sentinel.exists()


UNPICKLERS = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unsafe_uses(source: str) -> list[str]:
    """Imports of unpickling modules, numpy loads without allow_pickle=False, eval and exec."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            found += [f"imports {n}" for n in names if n and n.split(".")[0] in UNPICKLERS]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("eval", "exec") and isinstance(func, ast.Name):
                found.append(f"calls {name}")
            if name in ("load", "read_array") and "np" in ast.unparse(func).split(".")[0]:
                safe = any(
                    k.arg == "allow_pickle"
                    and isinstance(k.value, ast.Constant)
                    and k.value.value is False
                    for k in node.keywords
                )
                if not safe:
                    found.append(f"{ast.unparse(func)} without allow_pickle=False")
    return found


def test_the_source_check_sees_what_it_looks_for() -> None:
    for bad in (
        "import pickle",
        "from pickle import loads",
        "import joblib.numpy_pickle",
        "np.load(f)",
        "np.load(f, allow_pickle=True)",
        "np.lib.format.read_array(fp)",
        "eval(text)",
        "exec(text)",
    ):
        assert unsafe_uses(bad), bad
    assert not unsafe_uses("np.load(f, allow_pickle=False)\nast.literal_eval(text)\nnp.save(f, a)")


# Run by path in IBM FL's own Python to write the model file IBM FL loads (joblib.dump); never
# imported by SEEL, and it only writes.
WRITERS_ELSEWHERE = {"seel/ibmfl/make_files.py"}


def test_no_module_of_seel_can_unpickle_or_evaluate() -> None:
    modules = sorted((ROOT / "seel").rglob("*.py"))
    assert len(modules) > 20
    found = {
        str(m.relative_to(ROOT)): uses for m in modules if (uses := unsafe_uses(m.read_text()))
    }
    assert set(found) <= WRITERS_ELSEWHERE, found
    for name in WRITERS_ELSEWHERE:
        assert found.get(name, []) == ["imports joblib"], found.get(name)
        tree = ast.parse((ROOT / name).read_text())
        calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert not {c for c in calls if c.split(".")[-1] in ("load", "loads", "Unpickler")}, calls
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for m in modules
        for node in ast.walk(ast.parse(m.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {name for name in imported if name.endswith("make_files")}


# -- (d) what children print is never evaluated -----------------------------------------------


class Events:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def test_a_metrics_line_that_is_code_is_never_evaluated(tmp_path: Path) -> None:
    sentinel = tmp_path / "evaluated"
    evil = f"{{'acc': __import__('os').system('touch {sentinel}')}}"
    mixed = f"{{'acc': 0.25, 'loss': (lambda: open('{sentinel}', 'w'))()}}"
    plain = "{'acc': 0.25, 'loss': 1.5, 'f1 macro': 1, 'note': 'x', 'ok': True}"
    metrics = [evil, mixed, plain]

    def command(role: str) -> list[str]:
        return ["{python}", str(FAKE), "--role", role, "--style", "builtin", "{config}"]

    agg = {"connection": {"info": {"ip": "127.0.0.1", "port": 5000}}}
    (tmp_path / "config_agg.yml").write_text(json.dumps(agg))
    for i, line in enumerate(metrics):
        party = {
            "aggregator": {"ip": "127.0.0.1", "port": 5000},
            "connection": {"info": {"ip": "127.0.0.1", "port": 8085 + i}},
            "fake": {"args": f"--metrics {shlex.quote(line)}"},
        }
        (tmp_path / f"config_party{i}.yml").write_text(json.dumps(party))
    sweep = {
        "engine": {
            "extends": "builtin",
            "python": sys.executable,
            "aggregator": {
                "command": command("aggregator"),
                "port_keys": ["connection.info.port"],
                "stop_line": "STOP",
            },
            "party": {
                "command": command("party"),
                "port_keys": ["connection.info.port"],
                "aggregator_port_keys": ["aggregator.port"],
            },
            "validate": None,
            "stop": {"grace_s": 0.5, "term_grace_s": 0.5},
        },
        "configs": {
            "aggregator": "config_agg.yml",
            "parties": [f"config_party{i}.yml" for i in range(len(metrics))],
        },
        "timeouts": {"init": 10, "start": 5, "register": 5, "train": 5, "eval": 5, "stop": 5},
    }
    (tmp_path / "sweep.yml").write_text(json.dumps(sweep))
    settings = RunSettings(
        sweep=tmp_path / "sweep.yml", out=tmp_path / "run", retries=0, ports_dir=tmp_path / "ports"
    )

    result = asyncio.run(run_sweep(settings, Events()))

    (record,) = assert_ledger_intact(result.run_dir)
    assert record["status"] == "ok", record["reason"]
    assert [p["metrics"] for p in record["parties"]] == [
        {},
        {},
        {"acc": 0.25, "loss": 1.5, "f1 macro": 1.0},
    ]
    assert not sentinel.exists()
    assert_run_clean(result.run_dir, expected_spawns=1 + len(metrics))
    transcript = (result.run_dir / "trials" / record["trial_id"] / "party0.log").read_text()
    assert evil in transcript  # the line was printed and seen, and only read
