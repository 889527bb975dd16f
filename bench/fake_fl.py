"""A stand-in for the built-in engine's processes: the same console markers, no learning.

    python -I -S bench/fake_fl.py aggregator CONFIG.yml
    python -I -S bench/fake_fl.py party CONFIG.yml

Commands are answered at once, in the built-in engine's words. The aggregator and its parties talk
over UDP on the ports of their configs, so the lifecycle is the built-in one unchanged: a party
registers with the aggregator, EVAL makes the aggregator ask every party for its metrics (each party
prints its metrics dict), and the aggregator's STOP makes every party print "received a STOP
request" and exit. Standard library only, so that it starts in a few milliseconds.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
REPLY_TIMEOUT_S = 5.0


def read_config(path: Path) -> dict[str, str]:
    """The scalar entries of a block-style YAML mapping, by dotted path (enough for our configs)."""
    values: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([*(k for _, k in stack), key])
        if value.strip():
            values[dotted] = value.strip()
        else:
            stack.append((indent, key))
    return values


def say(logger: str, message: str) -> None:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    sys.stdout.write(f"{stamp}.{int(now % 1 * 1000):03d}Z | fake | INFO | {logger:<50} | {message}\n")
    sys.stdout.flush()


class Process:
    """The command loop: lines from the terminal and datagrams from the peers, one at a time."""

    logger = "fake"

    def __init__(self, config: dict[str, str]) -> None:
        self.config = config
        self.sock: socket.socket | None = None

    def listen(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, port))
        say(self.logger, f"Listening on {HOST}:{port}")

    def request(self, address: tuple[str, int], message: str) -> str:
        """Send `message` to a peer and wait for its reply ("" if none came)."""
        assert self.sock is not None
        self.sock.sendto(message.encode(), address)
        self.sock.settimeout(REPLY_TIMEOUT_S)
        try:
            while True:
                data, sender = self.sock.recvfrom(65536)
                if sender == address:
                    return data.decode()
                self.datagram(data.decode(), sender)
        except TimeoutError:
            return ""
        finally:
            self.sock.settimeout(None)

    def command(self, line: str) -> int | None:
        raise NotImplementedError

    def datagram(self, message: str, sender: tuple[str, int]) -> int | None:
        raise NotImplementedError

    def run(self) -> int:
        pending = b""
        while True:
            watched: list[int | socket.socket] = [0] if self.sock is None else [0, self.sock]
            ready, _, _ = select.select(watched, [], [])
            if 0 in ready:
                data = os.read(0, 4096)
                lines = (pending + data).split(b"\n") if data else [pending, b"STOP", b""]
                pending = lines.pop()
                for line in lines:
                    code = self.command(line.decode(errors="replace").strip().upper())
                    if code is not None:
                        return code
            if self.sock is not None and self.sock in ready:
                data, sender = self.sock.recvfrom(65536)
                code = self.datagram(data.decode(errors="replace"), sender)
                if code is not None:
                    return code


class Aggregator(Process):
    logger = "fake.aggregator"

    def __init__(self, config: dict[str, str]) -> None:
        super().__init__(config)
        self.parties: list[tuple[str, int]] = []

    def command(self, line: str) -> int | None:
        if line == "START":
            self.listen(int(self.config["connection.info.port"]))
            say(self.logger, "Aggregator start successful")
        elif line == "TRAIN":
            rounds = int(self.config.get("hyperparams.global.rounds", "1"))
            say(self.logger, "Initiating Global Training.")
            ids = ",".join(str(i) for i in range(len(self.parties)))
            for round_no in range(1, rounds + 1):
                say(self.logger, f"Finished round {round_no} of {rounds} [n_replies={len(self.parties)}] "
                                 f"[parties={ids}] [global_acc=0.900000]")
            say(self.logger, "Reached maximum global rounds. Finish training :) ")
            say(self.logger, "Finished Global Training")
        elif line == "EVAL":
            say(self.logger, "Initiating evaluation requests.")
            for i, party in enumerate(self.parties):
                say(self.logger, f"Party {i} evaluation: {self.request(party, 'eval')}")
            say(self.logger, "Finished eval requests")
        elif line == "STOP":
            for party in self.parties:
                self.request(party, "stop")
            say(self.logger, "Aggregator stop successful")
            return 0
        elif line:
            say(self.logger, f"Unknown command: {line}")
        return None

    def datagram(self, message: str, sender: tuple[str, int]) -> int | None:
        if message.startswith("register "):
            party = (HOST, int(message.split()[1]))
            if party not in self.parties:
                self.parties.append(party)
            say(self.logger, f"Registered party {self.parties.index(party)} at {HOST}:{party[1]}")
            say(self.logger, f"Total number of registered parties:{len(self.parties)}")
            assert self.sock is not None
            self.sock.sendto(b"registered", sender)
        return None


class Party(Process):
    logger = "fake.party"

    def command(self, line: str) -> int | None:
        if line == "START":
            self.listen(int(self.config["connection.info.port"]))
            say(self.logger, "Party start successful")
        elif line == "REGISTER":
            say(self.logger, "Registering party...")
            port = self.config["connection.info.port"]
            aggregator = (HOST, int(self.config["aggregator.port"]))
            if self.sock is not None and self.request(aggregator, f"register {port}") == "registered":
                say(self.logger, "Registration Successful")
            else:
                say(self.logger, "Registration Failed: no reply from the aggregator")
        elif line == "STOP":
            say(self.logger, "Party stop successful")
            return 0
        elif line:
            say(self.logger, f"Unknown command: {line}")
        return None

    def datagram(self, message: str, sender: tuple[str, int]) -> int | None:
        assert self.sock is not None
        if message == "eval":
            index = int(self.config.get("data.info.party_index", "0"))
            metrics = {"loss": 0.5 + index / 100, "acc": 0.9, "precision weighted": 0.9 - index / 100,
                       "recall weighted": 0.9}
            say(self.logger, repr(metrics))
            self.sock.sendto(repr(metrics).encode(), sender)
        elif message == "stop":
            say(self.logger, "received a STOP request")
            self.sock.sendto(b"ok", sender)
            return 0
        return None


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("aggregator", "party"):
        print("usage: fake_fl.py aggregator|party CONFIG.yml", file=sys.stderr)
        return 2
    config = read_config(Path(argv[1]))
    process = Aggregator(config) if argv[0] == "aggregator" else Party(config)
    say(process.logger, f"{'Aggregator' if argv[0] == 'aggregator' else 'Party'} initialization successful")
    return process.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
