"""A party: `python -m seel.fl.party CONFIG.yml`.

Commands on its terminal: START (listen on its own port), REGISTER (with the aggregator), STOP.
After registering, the aggregator calls it to train, evaluate, sync, save and stop.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from seel.fl import wire
from seel.fl.config import ConfigError, LocalParams, PartyConfig, load_party_config
from seel.fl.console import Console
from seel.fl.data import DataError, Split, party_split
from seel.fl.log import Logger
from seel.fl.metrics import evaluate
from seel.fl.model import Model

LOGGER = "seel.fl.party.party"
EXIT_CONFIG = 2


class SimulatedCrash(RuntimeError):
    """Raised by `simulation.crash_at_round`; the process dies with its traceback."""


def _crash(round_no: int) -> None:
    try:
        raise SimulatedCrash(f"simulated crash at round {round_no} (simulation.crash_at_round)")
    except SimulatedCrash:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def _hang() -> None:
    """Block the whole process, as a deadlock would: it answers nothing until killed."""
    while True:
        signal.pause()


class Party:
    """One party process: its data, its local model and its server for the aggregator's calls."""

    def __init__(self, config: PartyConfig, data: Split, log: Logger) -> None:
        self.config = config
        self.data = data
        self.log = log
        self.model = Model(config.model, data.x_train.shape[1], data.num_classes)
        self.server: asyncio.Server | None = None
        self.token: str | None = None
        self.party_id: int | None = None
        self.console: Console | None = None
        self._sim_rng = np.random.default_rng([config.simulation.seed, config.data.party_index, 7])

    # -- commands -------------------------------------------------------------------------

    async def start(self) -> int | None:
        if self.server is not None:
            self.log.warning("Party already started")
            return None
        self.server = await wire.listen(self._serve, self.config.listen, self.log)
        if self.server is None:
            return wire.EXIT_ADDRESS_IN_USE
        self.log.info("Party start successful")
        return None

    async def register(self) -> int | None:
        self.log.info("Registering party...")
        if self.server is None:
            self.log.error("Registration Failed: the party is not started (send START first)")
            return None
        agg = self.config.aggregator
        message = wire.Message(
            "register",
            {
                "host": self.config.listen.host,
                "port": self.config.listen.port,
                "n_samples": len(self.data.y_train),
            },
        )
        try:
            reply = await wire.request(agg.host, agg.port, message, self.config.max_message_bytes)
        except ConnectionRefusedError:
            self.log.error(f"Registration Failed: connection refused by the aggregator at {agg}")
            return None
        except (OSError, wire.WireError) as exc:
            self.log.error(f"Registration Failed: {exc}")
            return None
        if reply.kind != "registered":
            self.log.error(f"Registration Failed: {reply.fields.get('why', reply.kind)}")
            return None
        self.token = str(reply.fields["token"])
        self.party_id = int(reply.fields["party_id"])
        self.log.info("Registration Successful")
        return None

    async def stop(self) -> int:
        self.log.info("Party stop successful")
        if self.server is not None:
            self.server.close()
        return 0

    # -- requests from the aggregator -----------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stopping = False
        try:
            message = await wire.read_message(reader, self.config.max_message_bytes)
            token = message.fields.get("token")
            if (
                self.token is None
                or not isinstance(token, str)
                or not hmac.compare_digest(token.encode(), self.token.encode())
            ):
                raise wire.WireError(
                    f"{message.kind!r} request without this party's registration token"
                )
            reply = await self._handle(message, reader)
            stopping = message.kind == "stop"
            await wire.write_message(writer, reply)
        except wire.WireError as exc:
            self.log.error(f"Rejected a message: {exc}")
        except OSError:
            pass  # the aggregator hung up: a late reply it no longer wants
        except asyncio.CancelledError:
            # The process is stopping with this request in flight (a straggler's late round).
            # Ending quietly matters: Python 3.11's stream callback prints a traceback for a
            # handler task that ends cancelled.
            pass
        finally:
            writer.close()
        if stopping and self.console is not None:
            self.console.exit(0)

    async def _handle(self, message: wire.Message, reader: asyncio.StreamReader) -> wire.Message:
        try:
            if message.arrays:
                # The global model defines the architecture: a sweep varies the aggregator's.
                adopted = self.model.adopt(message.arrays)
                if adopted is not None:
                    self.log.info(f"Using the global model's architecture: {adopted}")
                self.model.set_weights(message.arrays)
        except ValueError as exc:
            self.log.error(f"Cannot use the global model: {exc}")
            return wire.Message("error", {"why": str(exc)})
        kind = message.kind
        if kind == "train":
            return await self._train(message, reader)
        if kind == "eval":
            metrics = evaluate(self.data.y_test, self.model.predict_proba(self.data.x_test))
            self.log.info(repr(metrics))
            return wire.Message("eval_reply", {"metrics": metrics})
        if kind == "sync":
            self.log.info("Received the global model from the aggregator")
            return wire.Message("ok")
        if kind == "save":
            path = Path.cwd() / f"party{self.party_id}_model_{time.strftime('%Y%m%dT%H%M%S')}.npz"
            np.savez(path, *self.model.weights)
            self.log.info(f"Model saved to {path}")
            return wire.Message("ok")
        if kind == "stop":
            self.log.info("received a STOP request")
            if self.server is not None:
                self.server.close()
            return wire.Message("ok")
        raise wire.WireError(f"unknown request {kind!r}")

    def _local_params(self, sent: object) -> LocalParams:
        values = dict(sent) if isinstance(sent, dict) else {}
        values.update(self.config.local_overrides)
        return LocalParams(
            epochs=int(values.get("epochs", LocalParams.epochs)),
            batch_size=int(values.get("batch_size", LocalParams.batch_size)),
            lr=float(values.get("lr", LocalParams.lr)),
        )

    async def _train(self, message: wire.Message, reader: asyncio.StreamReader) -> wire.Message:
        round_no = int(message.fields.get("round", 0))
        sim = self.config.simulation
        if sim.crash_at_round == round_no:
            _crash(round_no)
        if sim.hang_at_round == round_no:
            self.log.info(f"Simulating a hang at round {round_no} (simulation.hang_at_round)")
            _hang()
        params = self._local_params(message.fields.get("local"))
        rng = np.random.default_rng([self.config.data.seed, self.config.data.party_index, round_no])
        started = time.perf_counter()
        self.model.fit(self.data.x_train, self.data.y_train, params, rng)
        took = time.perf_counter() - started
        delay = sim.delay_s + sim.jitter_s * float(self._sim_rng.random())
        dropped = sim.drop_rate > 0 and float(self._sim_rng.random()) < sim.drop_rate
        if delay > 0:
            await asyncio.sleep(delay)
        self.log.info(
            f"Local training done for round {round_no}: {len(self.data.y_train)} samples, "
            f"{params.epochs} epochs, {took:.3f} s"
        )
        if dropped:
            self.log.info(f"Dropping the reply of round {round_no} (simulation.drop_rate)")
            await reader.read()  # wait until the aggregator gives up on it
            raise wire.WireError("reply dropped by simulation")
        return wire.Message(
            "train_reply",
            {"round": round_no, "n_samples": len(self.data.y_train)},
            self.model.weights,
        )

    async def run(self) -> int:
        self.console = Console(
            {"START": self.start, "REGISTER": self.register, "STOP": self.stop},
            self.log,
        )
        return await self.console.run()


def main(argv: list[str] | None = None) -> int:
    """Entry point: load the config and data, then serve commands from the terminal."""
    args = sys.argv[1:] if argv is None else argv
    log = Logger(LOGGER)
    if len(args) != 1:
        print("usage: python -m seel.fl.party CONFIG.yml", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = load_party_config(Path(args[0]))
        data = party_split(config.data)
    except (ConfigError, DataError) as exc:
        log.error(f"Error occurred while loading party configuration: {exc}")
        return EXIT_CONFIG
    log.info("Party initialization successful")
    try:
        return asyncio.run(Party(config, data, log).run())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
