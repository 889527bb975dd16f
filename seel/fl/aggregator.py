"""The aggregator: `python -m seel.fl.aggregator CONFIG.yml`.

Commands on its terminal: START, TRAIN, EVAL, SYNC, SAVE, STOP. Parties register with it; it then
calls each party for every round, waits for a quorum of replies and fuses them.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seel.fl import wire
from seel.fl.config import AggregatorConfig, ConfigError, Endpoint, load_aggregator_config
from seel.fl.console import Console
from seel.fl.data import DataError, Split, aggregator_split
from seel.fl.log import Logger
from seel.fl.model import Model, Weights

LOGGER = "seel.fl.aggregator.aggregator"
EXIT_CONFIG = 2
EXIT_QUORUM = 4
_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class PartyRef:
    """A registered party: where to call it and the token it expects."""

    party_id: int
    endpoint: Endpoint
    token: str
    n_samples: int


class QuorumError(Exception):
    """Too few parties replied in a round."""

    def __init__(self, queried: int, threshold: int, replies: int, timed_out: bool) -> None:
        self.queried, self.threshold, self.replies, self.timed_out = (
            queried,
            threshold,
            replies,
            timed_out,
        )
        counts = (
            f"[n_parties_queried={queried}] [quorum_threshold={threshold}] [n_replies={replies}]"
        )
        if timed_out:
            super().__init__(f"Timeout elapsed before quorum was reached {counts}")
        else:
            super().__init__(f"Quorum cannot be reached: parties failed to reply {counts}")


class PartyFailed(Exception):
    """A party answered a request with an error."""


def fuse(name: str, updates: list[tuple[Weights, int]]) -> Weights:
    """Average model updates: plainly (IterAvg) or weighted by sample count (FedAvg)."""
    if name == "FedAvgFusionHandler":
        counts = np.array([n for _, n in updates], dtype=np.float64)
        shares = (
            counts / counts.sum() if counts.sum() > 0 else np.full(len(updates), 1 / len(updates))
        )
    else:
        shares = np.full(len(updates), 1 / len(updates))
    layers = zip(*(w for w, _ in updates), strict=True)
    return [sum(s * layer for s, layer in zip(shares, group, strict=True)) for group in layers]


class Aggregator:
    """One aggregator process: its server, its registered parties and the global model."""

    def __init__(self, config: AggregatorConfig, validation: Split | None, log: Logger) -> None:
        self.config = config
        self.log = log
        self.validation = validation
        self.model: Model | None = None
        if validation is not None:
            self.model = Model(config.model, validation.x_test.shape[1], validation.num_classes)
        self.weights: Weights | None = self.model.weights if self.model is not None else None
        self.parties: list[PartyRef] = []
        self.server: asyncio.Server | None = None
        self.console: Console | None = None

    # -- commands -------------------------------------------------------------------------

    async def start(self) -> int | None:
        if self.server is not None:
            self.log.warning("Aggregator already started")
            return None
        self.server = await wire.listen(self._serve, self.config.listen, self.log)
        if self.server is None:
            return wire.EXIT_ADDRESS_IN_USE
        self.log.info("Aggregator start successful")
        return None

    async def train(self) -> int | None:
        cfg = self.config
        if len(self.parties) < cfg.num_parties:
            self.log.error(
                f"Cannot start training: {len(self.parties)} of {cfg.num_parties} parties registered "
                f"[num_parties={cfg.num_parties}]"
            )
            return None
        self.log.info("Initiating Global Training.")
        for round_no in range(1, cfg.rounds + 1):
            fields = {"round": round_no, "local": cfg.local.to_wire()}
            try:
                replies = await self._query("train", fields, self.weights or [])
            except QuorumError as exc:
                return await self._quorum_failed(exc)
            self.weights = fuse(
                cfg.fusion, [(r.arrays, int(r.fields["n_samples"])) for _, r in replies]
            )
            accuracy = self._validation_accuracy()
            ids = ",".join(
                str(p.party_id) for p, _ in sorted(replies, key=lambda pr: pr[0].party_id)
            )
            shown = "n/a" if accuracy is None else f"{accuracy:.6f}"
            self.log.info(
                f"Finished round {round_no} of {cfg.rounds} [n_replies={len(replies)}] "
                f"[parties={ids}] [global_acc={shown}]"
            )
            target = cfg.termination_accuracy
            if target is not None and accuracy is not None and accuracy >= target:
                self.log.info(f"Reached termination accuracy {accuracy:.6f} >= {target}")
                break
        else:
            self.log.info("Reached maximum global rounds. Finish training :) ")
        self.log.info("Finished Global Training")
        return None

    async def evaluate(self) -> int | None:
        if not self._has_parties("EVAL"):
            return None
        self.log.info("Initiating evaluation requests.")
        try:
            replies = await self._query("eval", {}, self.weights or [])
        except QuorumError as exc:
            return await self._quorum_failed(exc)
        for party, reply in sorted(replies, key=lambda pr: pr[0].party_id):
            self.log.info(f"Party {party.party_id} evaluation: {reply.fields.get('metrics')}")
        self.log.info("Finished eval requests")
        return None

    async def sync(self) -> int | None:
        if not self._has_parties("SYNC"):
            return None
        if self.weights is None:
            self.log.error("SYNC needs a global model: run TRAIN first")
            return None
        try:
            await self._query("sync", {}, self.weights)
        except QuorumError as exc:
            return await self._quorum_failed(exc)
        self.log.info("Finished sync model requests")
        return None

    async def save(self) -> int | None:
        if self.weights is None:
            self.log.error("SAVE needs a global model: run TRAIN first")
            return None
        path = (
            Path.cwd()
            / f"global_model_{time.strftime('%Y%m%dT%H%M%S')}_{self.config.listen.port}.npz"
        )
        np.savez(path, *self.weights)
        self.log.info(f"Global model saved to {path}")
        if self.parties:
            try:
                await self._query("save", {}, [])
            except QuorumError as exc:
                self.log.error(str(exc))
        self.log.info("Finished save requests")
        return None

    async def stop(self) -> int:
        await self._stop_parties()
        if self.server is not None:
            self.server.close()
        self.log.info("Aggregator stop successful")
        return 0

    # -- helpers --------------------------------------------------------------------------

    def _has_parties(self, command: str) -> bool:
        if not self.parties:
            self.log.error(f"Cannot {command}: no party has registered")
        return bool(self.parties)

    def _validation_accuracy(self) -> float | None:
        if self.model is None or self.validation is None or self.weights is None:
            return None
        self.model.set_weights(self.weights)
        predicted = np.argmax(self.model.predict_proba(self.validation.x_test), axis=1)
        return float(np.mean(predicted == self.validation.y_test))

    async def _quorum_failed(self, exc: QuorumError) -> int:
        self.log.error(str(exc))
        await self.stop()
        return EXIT_QUORUM

    async def _ask(
        self, party: PartyRef, kind: str, fields: dict[str, object], arrays: Weights
    ) -> wire.Message:
        message = wire.Message(kind, {**fields, "token": party.token}, list(arrays))
        endpoint = party.endpoint
        reply = await wire.request(
            endpoint.host, endpoint.port, message, self.config.max_message_bytes
        )
        if reply.kind == "error":
            raise PartyFailed(str(reply.fields.get("why", "unknown error")))
        if self.weights is not None and kind == "train":
            shapes = [a.shape for a in self.weights]
            if [a.shape for a in reply.arrays] != shapes:
                raise PartyFailed(
                    f"model update has shapes {[a.shape for a in reply.arrays]}, expected {shapes}"
                )
        return reply

    async def _query(
        self, kind: str, fields: dict[str, object], arrays: Weights
    ) -> list[tuple[PartyRef, wire.Message]]:
        """Ask every registered party; return once a quorum replied (late replies are dropped)."""
        cfg = self.config
        parties = list(self.parties)
        quorum = max(1, math.ceil(cfg.perc_quorum * len(parties) - 1e-9))
        tasks: dict[asyncio.Future[wire.Message], PartyRef] = {
            asyncio.ensure_future(self._ask(p, kind, fields, arrays)): p for p in parties
        }
        loop = asyncio.get_running_loop()
        deadline = None if cfg.max_timeout_s is None else loop.time() + cfg.max_timeout_s
        replies: list[tuple[PartyRef, wire.Message]] = []
        pending: set[asyncio.Future[wire.Message]] = set(tasks)
        timed_out = False
        try:
            while pending and len(replies) < quorum:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    timed_out = True
                    break
                for task in done:
                    party = tasks[task]
                    exc = task.exception()
                    if exc is None:
                        replies.append((party, task.result()))
                    else:
                        self.log.warning(
                            f"No {kind} reply from party {party.party_id}: {_describe(exc)}"
                        )
                if len(replies) + len(pending) < quorum:
                    break
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if len(replies) < quorum:
            raise QuorumError(len(parties), quorum, len(replies), timed_out)
        return replies

    async def _stop_parties(self) -> None:
        async def stop_one(party: PartyRef) -> None:
            try:
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    await self._ask(party, "stop", {}, [])
            except (OSError, TimeoutError, wire.WireError, PartyFailed) as exc:
                self.log.warning(f"Party {party.party_id} did not confirm STOP: {_describe(exc)}")

        await asyncio.gather(*(stop_one(p) for p in self.parties))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            message = await wire.read_message(reader, self.config.max_message_bytes)
            reply = self._register(message)
            await wire.write_message(writer, reply)
        except wire.WireError as exc:
            self.log.error(f"Rejected a message from {_peer(peer)}: {exc}")
        except (OSError, asyncio.CancelledError):
            pass  # a client that hung up, or the process stopping mid-request
        finally:
            writer.close()

    def _register(self, message: wire.Message) -> wire.Message:
        if message.kind != "register":
            raise wire.WireError(
                f"unexpected {message.kind!r} message (only registrations are accepted)"
            )
        host, port, n_samples = (message.fields.get(k) for k in ("host", "port", "n_samples"))
        if not isinstance(host, str) or not isinstance(port, int) or not isinstance(n_samples, int):
            raise wire.WireError("registration lacks host, port or n_samples")
        endpoint = Endpoint(host, port)
        for i, known in enumerate(self.parties):
            if known.endpoint == endpoint:
                self.parties[i] = PartyRef(
                    known.party_id, endpoint, secrets.token_hex(16), n_samples
                )
                return wire.Message(
                    "registered", {"party_id": known.party_id, "token": self.parties[i].token}
                )
        party = PartyRef(len(self.parties), endpoint, secrets.token_hex(16), n_samples)
        self.parties.append(party)
        self.log.info(f"Registered party {party.party_id} at {endpoint}")
        self.log.info(f"Total number of registered parties:{len(self.parties)}")
        return wire.Message("registered", {"party_id": party.party_id, "token": party.token})

    async def run(self) -> int:
        self.console = Console(
            {
                "START": self.start,
                "TRAIN": self.train,
                "EVAL": self.evaluate,
                "SYNC": self.sync,
                "SAVE": self.save,
                "STOP": self.stop,
            },
            self.log,
        )
        return await self.console.run()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


def _peer(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def main(argv: list[str] | None = None) -> int:
    """Entry point: load the config, then serve commands from the terminal."""
    args = sys.argv[1:] if argv is None else argv
    log = Logger(LOGGER)
    if len(args) != 1:
        print("usage: python -m seel.fl.aggregator CONFIG.yml", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = load_aggregator_config(Path(args[0]))
        validation = aggregator_split(config.data) if config.data is not None else None
    except (ConfigError, DataError) as exc:
        log.error(f"Error occurred while loading aggregator configuration: {exc}")
        return EXIT_CONFIG
    log.info("Aggregator initialization successful")
    try:
        return asyncio.run(Aggregator(config, validation, log).run())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
