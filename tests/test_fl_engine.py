"""The built-in engine end to end: real aggregator and party processes on ptys."""

from __future__ import annotations

import ast
import re
import socket
from pathlib import Path

import pytest

from tests.flkit import Proc, federation, free_ports, party_doc, write_yaml

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \| [\w.]+ \| (INFO|ERROR|WARNING) \| [\w.][\w. ]{49,} \| .+$"
)
# IBM FL 2.0.1's key order, with `loss` where its Keras models put it.
METRIC_ORDER = [
    "loss", "acc",
    *(f"{m} {a}" for a in ("micro", "macro", "weighted") for m in ("f1", "precision", "recall")),
]


def metrics_of(line: str) -> dict[str, float]:
    return dict(ast.literal_eval(line[line.index("{"):]))


def test_whole_lifecycle(tmp_path: Path) -> None:
    with federation(tmp_path, agg={"rounds": 4}) as fed:
        agg, parties = fed.up()
        agg.send("TRAIN")
        agg.expect("Initiating Global Training.")
        accuracies = [float(agg.expect_line(r"global_acc=[\d.]+").split("=")[1]) for _ in range(4)]
        agg.expect("Reached maximum global rounds. Finish training :) ")
        agg.expect("Finished Global Training")
        assert accuracies[-1] >= 0.90

        agg.send("EVAL")
        party_metrics = [metrics_of(p.expect("'loss': ")) for p in parties]
        agg.expect("Finished eval requests")
        for m in party_metrics:
            assert list(m) == METRIC_ORDER
            assert all(isinstance(v, float) for v in m.values())
            assert m["acc"] > 0.85

        agg.send("SYNC")
        agg.expect("Finished sync model requests")
        agg.send("SAVE")
        saved = agg.expect("Global model saved to ")
        agg.expect("Finished save requests")
        assert Path(saved.split("saved to ")[1].strip()).exists()

        agg.send("STOP")
        agg.expect("Aggregator stop successful")
        for p in parties:
            p.expect("received a STOP request")
        assert [p.exit_code() for p in parties] == [0, 0]
        assert agg.exit_code() == 0


def test_log_lines_have_ibm_fl_shape(tmp_path: Path) -> None:
    with federation(tmp_path) as fed:
        agg, _ = fed.up()
        agg.send("STOP")
        assert agg.exit_code() == 0
        lines = [ln.strip() for ln in agg.output().splitlines() if ln.strip()]
        assert lines and all(LOG_LINE.match(ln) for ln in lines), lines


def test_aggregator_port_taken_exits_3_without_success(tmp_path: Path) -> None:
    with federation(tmp_path) as fed, socket.socket() as squatter:
        port = int(fed.agg_config.read_text().split('"port": ')[1].split()[0].rstrip(","))
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        agg, _ = fed.spawn()
        agg.expect("Aggregator initialization successful")
        agg.send("START")
        line = agg.expect("Address already in use")
        assert "ERROR" in line and f"127.0.0.1:{port}" in line
        assert agg.exit_code() == 3
        assert "start successful" not in agg.output()


def test_party_port_taken_exits_3(tmp_path: Path) -> None:
    with federation(tmp_path, n_parties=1) as fed, socket.socket() as squatter:
        _agg, (_party,) = fed.spawn()
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        cfg = party_doc(0, 1, 1, squatter.getsockname()[1])
        taken = Proc("seel.fl.party", write_yaml(tmp_path / "taken.yml", cfg), tmp_path)
        fed.procs.append(taken)
        taken.expect("Party initialization successful")
        taken.send("START")
        taken.expect("Address already in use")
        assert taken.exit_code() == 3


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("connection: [unclosed", "malformed YAML"),
        ("hyperparams:\n  global:\n    roundz: 3\n", "hyperparams.global.roundz: unknown key"),
        ("hyperparams:\n  global:\n    rounds: three\n", "hyperparams.global.rounds: expected an integer"),
        ("fusion:\n  name: KrumFusionHandler\nconnection:\n  info:\n    port: 5000\n",
         "fusion.name: KrumFusionHandler is not supported"),
    ],
)
def test_bad_aggregator_config_exits_2_naming_file_and_key(tmp_path: Path, text: str, expect: str) -> None:
    config = tmp_path / "config_agg.yml"
    config.write_text(text)
    agg = Proc("seel.fl.aggregator", config, tmp_path)
    line = agg.expect(expect)
    assert "ERROR" in line and str(config) in line
    assert agg.exit_code() == 2


def test_missing_config_exits_2(tmp_path: Path) -> None:
    agg = Proc("seel.fl.aggregator", tmp_path / "nope.yml", tmp_path)
    line = agg.expect("file not found")
    assert str(tmp_path / "nope.yml") in line
    assert agg.exit_code() == 2


def test_register_before_aggregator_is_up_fails_cleanly(tmp_path: Path) -> None:
    agg_port, port = free_ports(2)
    party = Proc("seel.fl.party", write_yaml(tmp_path / "p.yml", party_doc(0, 1, agg_port, port)), tmp_path)
    try:
        party.expect("Party initialization successful")
        party.send("START")
        party.expect("Party start successful")
        party.send("REGISTER")
        party.expect("Registration Failed: connection refused")
        party.send("STOP")
        assert party.exit_code() == 0
    finally:
        party.kill()


def test_train_with_too_few_parties_is_an_error_and_stays_up(tmp_path: Path) -> None:
    with federation(tmp_path, n_parties=2) as fed:
        agg, parties = fed.spawn()
        agg.expect("Aggregator initialization successful")
        agg.send("START")
        agg.expect("Aggregator start successful")
        parties[0].expect("Party initialization successful")
        parties[0].send("START")
        parties[0].expect("Party start successful")
        parties[0].send("REGISTER")
        parties[0].expect("Registration Successful")
        agg.send("TRAIN")
        agg.expect("Cannot start training: 1 of 2 parties registered [num_parties=2]")
        agg.send("STOP")
        assert agg.exit_code() == 0
        assert parties[0].exit_code() == 0


@pytest.mark.parametrize("max_timeout", [1, None])
def test_party_crash_at_round_ends_training_with_quorum_error(tmp_path: Path, max_timeout: int | None) -> None:
    with federation(tmp_path, agg={"max_timeout": max_timeout}, sims={1: {"crash_at_round": 2}}) as fed:
        agg, parties = fed.up()
        agg.send("TRAIN")
        agg.expect("Finished round 1 of 3")
        parties[1].expect("SimulatedCrash: simulated crash at round 2")
        assert parties[1].exit_code() == 1
        # Quorum is out of reach the moment party 1's connection closes, so the aggregator fails at
        # once: whether party 0's reply had arrived by then (n_replies 0 or 1) is a matter of timing.
        line = agg.expect_line(r"ERROR .*\[n_parties_queried=2\] \[quorum_threshold=2\] \[n_replies=[01]\]")
        assert "ERROR" in line
        assert agg.exit_code() == 4
        parties[0].expect("received a STOP request")
        assert parties[0].exit_code() == 0
        assert "Finished round 2" not in agg.output()


def test_party_hang_with_max_timeout_times_out(tmp_path: Path) -> None:
    with federation(tmp_path, agg={"max_timeout": 0.5}, sims={0: {"hang_at_round": 2}}) as fed:
        agg, parties = fed.up()
        agg.send("TRAIN")
        parties[0].expect("Simulating a hang at round 2")
        line = agg.expect("Timeout elapsed before quorum was reached [n_parties_queried=2] [quorum_threshold=2] [n_replies=1]")
        assert "ERROR" in line
        assert parties[0].child.isalive()  # hung: it is the driver's job to kill it
        # Killed now, as a driver would: the aggregator's STOP to it fails at once, instead of
        # after the 5 s it waits for a hung party (the next test waits them).
        parties[0].kill()
        assert agg.exit_code() == 4
        assert parties[1].exit_code() == 0


def test_party_hang_without_max_timeout_waits_until_stopped(tmp_path: Path) -> None:
    with federation(tmp_path, sims={0: {"hang_at_round": 1}}) as fed:
        agg, parties = fed.up()
        agg.send("TRAIN")
        parties[0].expect("Simulating a hang at round 1")
        parties[1].expect("Local training done for round 1")
        agg.send("STOP")
        agg.expect("TRAIN interrupted by STOP")
        agg.expect_line(r"Party \d+ did not confirm STOP")  # the hung one: after a bounded wait
        agg.expect("Aggregator stop successful")
        assert agg.exit_code() == 0
        assert parties[1].exit_code() == 0
        assert "Finished round 1" not in agg.output()


def test_quorum_below_one_drops_the_straggler(tmp_path: Path) -> None:
    sims = {1: {"delay_s": 30}}
    with federation(tmp_path, agg={"perc_quorum": 0.5, "rounds": 2}, sims=sims) as fed:
        agg, parties = fed.up()
        agg.send("TRAIN")
        rounds = [agg.expect(f"Finished round {r} of 2", timeout=10) for r in (1, 2)]
        assert all("[n_replies=1] [parties=0]" in line for line in rounds)
        agg.expect("Finished Global Training")
        agg.send("STOP")
        assert agg.exit_code() == 0
        # the straggler stops with its late round still in flight: quietly, with no traceback
        parties[1].expect("received a STOP request")
        assert parties[1].exit_code() == 0
        assert "Traceback" not in parties[1].output()


def test_termination_accuracy_ends_training_early(tmp_path: Path) -> None:
    with federation(tmp_path, agg={"rounds": 10, "termination_accuracy": 0.5}) as fed:
        agg, _ = fed.up()
        agg.send("TRAIN")
        line = agg.expect("Reached termination accuracy")
        assert re.search(r"Reached termination accuracy 0\.\d+ >= 0\.5", line)
        agg.expect("Finished Global Training")
        assert "Finished round 2 of 10" not in agg.output()
        assert "Reached maximum global rounds" not in agg.output()


def _final_metrics(tmp: Path) -> list[dict[str, float]]:
    with federation(tmp, agg={"rounds": 2}) as fed:
        agg, parties = fed.up()
        agg.send("TRAIN")
        agg.expect("Finished Global Training")
        agg.send("EVAL")
        got = [metrics_of(p.expect("'loss': ")) for p in parties]
        agg.send("STOP")
        agg.exit_code()
        return got


def test_same_seed_gives_identical_metrics(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert _final_metrics(tmp_path / "a") == _final_metrics(tmp_path / "b")


def test_party_stop_typed_on_its_own_terminal(tmp_path: Path) -> None:
    with federation(tmp_path, n_parties=1) as fed:
        _, (party,) = fed.spawn()
        party.expect("Party initialization successful")
        party.send("STOP")
        assert party.exit_code() == 0


def test_garbage_on_the_wire_is_rejected_and_the_aggregator_lives(tmp_path: Path) -> None:
    with federation(tmp_path) as fed:
        agg, _parties = fed.up()
        port = int(fed.agg_config.read_text().split('"port": ')[1].split()[0].rstrip(","))
        for payload in (b"GET / HTTP/1.0\r\n\r\n", b"SEFL\x00\x00\x00\x02\xff\xff\xff\xff\xff\xff\xff\xff"):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(payload)
            agg.expect("Rejected a message from")
        agg.send("TRAIN")
        agg.expect("Finished Global Training")
        agg.send("STOP")
        assert agg.exit_code() == 0
