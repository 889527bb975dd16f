"""A fake FL aggregator or party: prints an engine's console markers and injects faults on demand.

    python fakefl.py --role party --style ibmfl --ready-after 0.05 --hang-on REGISTER CONFIG.yml

Commands arrive on stdin, one per line, as on the real consoles. Every knob is a command-line
option; a config file may add more options in its `fake.args` string, so that a sweep can change
them per trial. The fake processes do not talk over the network. An aggregator tells its parties
about EVAL and STOP through small "mailbox" files next to its config (the trial directory):
`fakefl-<aggregator port>.eval` and `.stop`. A party reacts to files written after it started.

The fault knobs (`--hang-on`, `--crash-on`, `--exit-on`) take a command name. Two more names
count as commands: INIT, met just before the initialization marker, and, for a builtin party,
EVAL and STOP arriving from the aggregator through the mailbox (as the real party gets them
over the network, not on its terminal).

Styles:
- builtin: SEEL's own runtime (seel.fl): parties exit by themselves after the aggregator's STOP.
- ibmfl: IBM FL 2.0.1 as measured: log lines `TIME | 2.0.1 | LEVEL | logger (50 wide) | message`,
  the werkzeug "Running on" line after START, no 'loss' key in the metrics, parties that stay up
  after the aggregator's STOP until the next line arrives on stdin, `--port-taken` printing
  "start successful" next to an OSError traceback on stderr, `--missing-section` staying at the
  prompt after "Error occurred while loading ... configuration".
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

IBMFL_VERSION = "2.0.1"
SEEL_VERSION = "0.1.0"

IBMFL_METRICS = (
    "{'score': 0.9191919191919192, 'acc': 0.9191919191919192, 'f1 micro': 0.92, "
    "'precision micro': 0.92, 'recall micro': 0.92, 'f1 macro': 0.91, 'precision macro': 0.93, "
    "'recall macro': 0.91, 'f1 weighted': 0.92, 'precision weighted': 0.93, 'recall weighted': 0.92}"
)
BUILTIN_METRICS = (
    "{'loss': 0.3125, 'acc': 0.9, 'f1 micro': 0.9, 'precision micro': 0.9, 'recall micro': 0.9, "
    "'f1 macro': 0.89, 'precision macro': 0.9, 'recall macro': 0.89, 'f1 weighted': 0.9, "
    "'precision weighted': 0.91, 'recall weighted': 0.9}"
)

_out_lock = threading.Lock()


def parse_bytes(text: str) -> int:
    """`20MB`, `512KB`, `1000` -> bytes."""
    units = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "B": 1}
    upper = text.strip().upper()
    for suffix, factor in units.items():
        if upper.endswith(suffix):
            return int(float(upper[: -len(suffix)]) * factor)
    return int(upper)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", help="config file; its fake.args string adds options")
    p.add_argument("--role", choices=("aggregator", "party"), default="aggregator")
    p.add_argument("--style", choices=("builtin", "ibmfl"), default="builtin")
    p.add_argument("--ready-after", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long before the initialization marker")
    p.add_argument("--wait-for", default=None, metavar="PATH",
                   help="wait until PATH exists before the initialization marker")
    p.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM")
    p.add_argument("--exit", type=int, default=None, metavar="CODE",
                   help="exit with CODE right after the initialization marker")
    p.add_argument("--flood", type=parse_bytes, default=0, metavar="BYTES",
                   help="print this many bytes of lines before the initialization marker")
    p.add_argument("--chatter", type=int, default=0, metavar="LINES",
                   help="print this many numbered lines right after the initialization marker")
    p.add_argument("--binary", action="store_true",
                   help="print invalid UTF-8 and ANSI escapes, also around the initialization marker")
    p.add_argument("--hang-on", action="append", default=[], metavar="CMD",
                   help="stop responding after receiving CMD (INIT: before the initialization marker)")
    p.add_argument("--crash-on", action="append", default=[], metavar="CMD",
                   help="print a Python traceback and exit 1 on CMD (INIT: as above)")
    p.add_argument("--exit-on", nargs=2, action="append", default=[], metavar=("CMD", "CODE"),
                   help="exit with CODE on CMD")
    p.add_argument("--port-taken", action="store_true", help="START finds its port taken")
    p.add_argument("--missing-section", action="store_true",
                   help="the config lacks a section: fail to load, stay at the prompt")
    p.add_argument("--hold-train-until", default=None, metavar="PATH",
                   help="on TRAIN, wait until PATH exists (a test lets trials go on when it wants)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--round-acc", type=float, default=0.6, metavar="ACC",
                   help="global accuracy after round 1 (each later round adds 0.1)")
    p.add_argument("--round-s", type=float, default=0.0, metavar="SECONDS",
                   help="how long each round takes")
    p.add_argument("--metrics", default=None, metavar="TEXT",
                   help="print TEXT as a party's metrics line instead of the usual dict")
    p.add_argument("--mailbox", default=None, help="folder of the mailbox files (default: the config's)")
    return p


def read_config(path: str | None) -> dict[str, Any]:
    if not path or not os.path.exists(path):
        return {}
    from ruamel.yaml import YAML

    doc = YAML(typ="safe", pure=True).load(Path(path).read_text(encoding="utf-8"))
    return doc if isinstance(doc, dict) else {}


def dig(doc: Any, dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return default
        doc = doc[part]
    return doc


class Fake:
    """One fake process."""

    def __init__(self, args: argparse.Namespace, config: dict[str, Any]) -> None:
        self.a = args
        self.role = args.role
        self.ibmfl = args.style == "ibmfl"
        self.port = int(dig(config, "connection.info.port", 0) or 0)
        self.agg_port = self.port if self.role == "aggregator" else int(dig(config, "aggregator.port", 0) or 0)
        folder = args.mailbox or (str(Path(args.config).parent) if args.config else os.getcwd())
        self.mailbox = Path(folder)
        self.started = time.time()
        self.loaded = not args.missing_section
        self.stopping = False  # ibmfl party: the aggregator's STOP arrived
        self.hung = threading.Event()
        self.party_index = int(dig(config, "data.info.party_index", 0) or 0)

    # -- output ---------------------------------------------------------------------------

    def write(self, text: str, stream: Any = None) -> None:
        with _out_lock:
            out = stream or sys.stdout
            out.write(text + "\n")
            out.flush()

    def log(self, message: str, logger: str | None = None, level: str = "INFO") -> None:
        if logger is None:
            logger = "__main__" if self.ibmfl else f"seel.fl.{self.role}.{self.role}"
        t = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"
        version = IBMFL_VERSION if self.ibmfl else SEEL_VERSION
        self.write(f"{stamp} | {version} | {level} | {logger:<50} | {message}")

    def err(self, text: str) -> None:
        self.write(text, sys.stderr)

    def traceback(self, exc_line: str) -> None:
        self.err("Traceback (most recent call last):")
        self.err(f'  File "{__file__}", line 1, in <module>')
        self.err("    main()")
        self.err(exc_line)

    def title(self) -> str:
        return "Aggregator" if self.role == "aggregator" else "Party"

    # -- startup --------------------------------------------------------------------------

    def flood(self, n_bytes: int) -> None:
        line = ("flood " + "x" * 93 + "\n").encode()
        chunk = line * 655
        out = sys.stdout.buffer
        left = n_bytes
        with _out_lock:
            sys.stdout.flush()
            while left >= len(chunk):
                out.write(chunk)
                left -= len(chunk)
            while left >= len(line):
                out.write(line)
                left -= len(line)
            out.flush()

    def binary(self) -> None:
        with _out_lock:
            sys.stdout.flush()
            out = sys.stdout.buffer
            out.write(b"\xff\xfe\xfd invalid utf-8 \xc3\x28 \xe2\x82 truncated\n")
            out.write(b"\x1b[31mred\x1b[0m \x1b]0;window title\x07 \x1b[2K\x1b[1A cursor\n")
            out.write(b"bare carriage return\rover\x00written\n")
            out.flush()

    def ready_line(self) -> str:
        return f"{self.title()} initialization successful"

    def startup(self) -> None:
        if self.ibmfl:
            t = time.time()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}"
            self.write(f"{stamp} WARNING ibmfl.util.config :: Yaml configuration file not found: log_config.yaml")
            self.log("Getting details from config file.", "ibmfl.util.config")
        if self.a.flood:
            self.flood(self.a.flood)
        if self.a.ready_after > 0:
            time.sleep(self.a.ready_after)
        while self.a.wait_for and not os.path.exists(self.a.wait_for):
            time.sleep(0.005)
        if not self.loaded:
            what = "aggregator" if self.role == "aggregator" else "party"
            if self.ibmfl:
                self.log(f"Error occurred while loading {what} configuration")
                self.log("'NoneType' object is not callable", level="ERROR")
                self.traceback("TypeError: 'NoneType' object is not callable")
                return  # IBM FL stays at its prompt
            self.log(f"Error occurred while loading {what} configuration: fusion: missing", level="ERROR")
            sys.exit(2)
        if self.a.binary:
            self.binary()
            with _out_lock:
                sys.stdout.buffer.write(b"\x1b[32m\xe2\x82" + self.ready_line().encode() + b"\x1b[0m\xff\r\n")
                sys.stdout.buffer.flush()
        else:
            self.fault("INIT")
            self.log(self.ready_line())
        for n in range(1, self.a.chatter + 1):
            self.log(f"chatter {n} of {self.a.chatter}")
        if self.a.exit is not None:
            sys.exit(self.a.exit)

    # -- commands -------------------------------------------------------------------------

    def fault(self, command: str) -> None:
        """Hang, crash or exit if a knob names `command`."""
        main = threading.current_thread() is threading.main_thread()
        if command in self.a.hang_on:
            self.hung.set()
            threading.Event().wait()  # never answers again
        if command in self.a.crash_on:
            self.traceback(f"RuntimeError: {self.role} crashed on {command}")
            if not main:
                os._exit(1)  # the mailbox thread: sys.exit would end only the thread
            sys.exit(1)
        for cmd, code in self.a.exit_on:
            if command == cmd:
                if not main:
                    os._exit(int(code))
                sys.exit(int(code))

    def on_line(self, line: str) -> None:
        command = line.strip()
        self.fault(command)
        if self.ibmfl and self.role == "party" and self.stopping:
            self.ibmfl_party_shutdown(successful=True)
        handler = self.find_handler(line)
        if handler is not None:
            handler()
        elif not self.ibmfl and command:
            self.log(f"Unknown command: {command.upper()}", level="ERROR")

    def find_handler(self, line: str) -> Any:
        names = (("START", "STOP", "TRAIN", "EVAL", "SYNC", "SAVE") if self.role == "aggregator"
                 else ("START", "STOP", "REGISTER", "EVAL", "SAVE"))
        for name in names:
            # IBM FL: case-sensitive prefix match; SEEL's runtime: whole line, any case.
            hit = line.startswith(name) if self.ibmfl else line.strip().upper() == name
            if hit:
                return getattr(self, f"cmd_{name.lower()}", None)
        return None

    def state(self, name: str) -> None:
        if self.ibmfl and self.role == "aggregator":
            self.log(f"State: States.{name}", "root")

    def cmd_start(self) -> None:
        self.state("CLI_WAIT")
        if not self.loaded:
            self.log("Error occurred during start", level="ERROR")
            self.log("'NoneType' object has no attribute 'start'", level="ERROR")
            return
        title = self.title()
        running = f" * Running on http://127.0.0.1:{self.port}/ (Press CTRL+C to quit)"
        if self.a.port_taken:
            if self.ibmfl:
                # Flask's thread dies on stderr while the main thread reports success.
                self.err("Exception in thread Thread-1 (start):")
                self.err("Traceback (most recent call last):")
                self.err('  File "/usr/lib/python3.11/threading.py", line 1045, in _bootstrap_inner')
                self.log(f"{title} start successful")
                self.err("    self.run()")
                self.err('  File "/usr/lib/python3.11/socketserver.py", line 472, in server_bind')
                self.err("    self.socket.bind(self.server_address)")
                self.err("OSError: [Errno 98] Address already in use")
                return
            self.log(f"Address already in use: 127.0.0.1:{self.port}", level="ERROR")
            sys.exit(3)
        if self.ibmfl:
            if self.role == "party":
                self.log(running, "werkzeug")
                self.log(f"{title} start successful")
            else:
                self.log(f"{title} start successful")
                self.log(running, "werkzeug")
        else:
            self.log(f"Listening on 127.0.0.1:{self.port}")
            self.log(f"{title} start successful")

    def cmd_register(self) -> None:
        self.log("Registering party...")
        self.log("Registration Successful")

    def cmd_train(self) -> None:
        self.state("TRAIN")
        if not self.loaded:
            self.log("Initiating Global Training.")
            self.log("Exception occurred during the initialization of the global training.", level="ERROR")
            self.log("Error occurred during stop", level="ERROR")
            sys.exit(0)
        self.log("Initiating Global Training.")
        while self.a.hold_train_until and not Path(self.a.hold_train_until).exists():
            time.sleep(0.02)
        if self.ibmfl:
            self.log("Warm start disabled.", "ibmfl.aggregator.fusion.fusion_handler")
        for round_no in range(1, self.a.rounds + 1):
            if self.ibmfl:
                fusion = "ibmfl.aggregator.fusion.fusion_state_service"
                self.log("Model updateNone", "ibmfl.aggregator.fusion.iter_avg_fusion_handler")
                self.log("Fusion state States.SND_MODEL", fusion)
                self.log("State: States.QUORUM_WAIT", "ibmfl.aggregator.protohandler.proto_handler")
                self.log("Fusion state States.AGGREGATING", fusion)
            else:
                if self.a.round_s:
                    time.sleep(self.a.round_s)
                acc = self.a.round_acc + 0.1 * (round_no - 1)
                self.log(f"Finished round {round_no} of {self.a.rounds} [n_replies=2] "
                         f"[parties=0,1] [global_acc={acc:.6f}]")
            self.fault(f"ROUND{round_no}")  # --hang-on ROUND1: hang once round 1 is over
        done = "Reached maximum global rounds. Finish training :) "
        self.log(done, "ibmfl.aggregator.fusion.iter_avg_fusion_handler" if self.ibmfl else None)
        self.log("Finished Global Training")

    def metrics_line(self) -> None:
        if self.a.metrics is not None:
            self.log(self.a.metrics)
        elif self.ibmfl:
            self.log(IBMFL_METRICS, "ibmfl.party.training.local_training_handler")
        else:
            self.log(BUILTIN_METRICS)

    def cmd_eval(self) -> None:
        if self.role == "party":
            self.metrics_line()
            return
        self.state("EVAL")
        self.log("Initiating evaluation requests.")
        self.post("eval")
        if self.ibmfl:
            self.log("Finished evaluate model requests.", "ibmfl.aggregator.fusion.fusion_handler")
        else:
            self.log(f"Party 0 evaluation: {BUILTIN_METRICS}")
        self.log("Finished eval requests")

    def cmd_sync(self) -> None:
        self.state("SYNC")
        self.log("Finished sync model requests")

    def cmd_save(self) -> None:
        self.state("SAVE")
        self.log("Finished save requests")

    def cmd_stop(self) -> None:
        if self.role == "party":
            if self.ibmfl:
                self.ibmfl_party_shutdown(successful=False)
            self.log("Party stop successful")
            sys.exit(0)
        self.state("STOP")
        if not self.loaded:
            self.log("Error occurred during stop", level="ERROR")
            sys.exit(0)
        self.post("stop")
        if self.ibmfl:
            self.log("Number of registered parties:2", "ibmfl.aggregator.protohandler.proto_handler")
            self.shutdown_lines()
        self.log("Aggregator stop successful")
        sys.exit(0)

    def shutdown_lines(self) -> None:
        self.log("Stopping Receiver and Sender", "ibmfl.connection.flask_connection")
        self.err("/venv/lib/python3.11/site-packages/ibmfl/connection/flask_connection.py:240: "
                 "UserWarning: The 'environ['werkzeug.server.shutdown']' function is deprecated "
                 "and will be removed in Werkzeug 2.1.")
        self.err("  func()")
        stamp = time.strftime("%d/%b/%Y %H:%M:%S")
        self.log(f'127.0.0.1 - - [{stamp}] "POST /shutdown HTTP/1.1" 200 -', "werkzeug")

    def ibmfl_party_shutdown(self, successful: bool) -> NoReturn:
        self.shutdown_lines()
        if successful:
            self.log("Party stop successful")
        sys.exit(0)

    # -- the mailbox between the fake aggregator and its parties --------------------------

    def box(self, event: str) -> Path:
        return self.mailbox / f"fakefl-{self.agg_port}.{event}"

    def post(self, event: str) -> None:
        path = self.box(event)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(str(time.time()))
        tmp.replace(path)

    def fresh(self, event: str, seen: dict[str, float]) -> bool:
        try:
            stamp = float(self.box(event).read_text() or 0)
        except (OSError, ValueError):
            return False
        if stamp < self.started or stamp == seen.get(event):
            return False
        seen[event] = stamp
        return True

    def watch_mailbox(self) -> None:
        seen: dict[str, float] = {}
        while not self.hung.is_set():
            if self.fresh("eval", seen):
                if self.ibmfl:
                    self.log("Received request in PH 10", "ibmfl.party.party_protocol_handler")
                else:
                    self.fault("EVAL")
                self.metrics_line()
            if self.fresh("stop", seen):
                if self.ibmfl:
                    # Stopping before saying so: the controller sends its stop line once it sees
                    # the message, and the main thread may read that line before this thread
                    # runs again (a busy machine), which would take it for a STOP command.
                    self.stopping = True  # leaves only after the next line on stdin
                    self.log("Received request in PH 14", "ibmfl.party.party_protocol_handler")
                    self.log("received a STOP request", "ibmfl.party.party_protocol_handler")
                    return
                self.fault("STOP")
                self.log("received a STOP request", "seel.fl.party.party")
                sys.stdout.flush()
                os._exit(0)
            time.sleep(0.005)

    # -- main loop ------------------------------------------------------------------------

    def run(self) -> int:
        if self.a.ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.startup()
        if self.role == "party":
            threading.Thread(target=self.watch_mailbox, daemon=True).start()
        while True:
            line = sys.stdin.readline()
            if not line:
                if self.ibmfl:
                    threading.Event().wait()  # IBM FL spins on EOF; blocking is kinder
                line = "STOP"
            self.on_line(line.rstrip("\r\n"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    config = read_config(args.config)
    extra = dig(config, "fake.args", "")
    if extra:
        args = parser.parse_args([*argv, *shlex.split(str(extra))])
    return Fake(args, config).run()


if __name__ == "__main__":
    sys.exit(main())
