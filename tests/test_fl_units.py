"""Units of the built-in engine: metrics against scikit-learn, the wire format, configs, data."""

from __future__ import annotations

import asyncio
import io
import struct
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from seel.fl import wire
from seel.fl.aggregator import fuse
from seel.fl.config import ConfigError, DataSpec, load_aggregator_config, load_party_config
from seel.fl.data import DataError, aggregator_split, load_digits, party_split
from seel.fl.metrics import evaluate

CONFIGS = Path(__file__).resolve().parents[1] / "sweeps" / "configs" / "builtin"


@pytest.mark.parametrize("seed", range(12))
def test_metrics_agree_with_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(5, 300)), int(rng.integers(2, 11))
    y_true = rng.integers(0, k, n)
    if seed % 3 == 0:
        y_true[y_true == 1] = 0  # a class absent from the truth
    proba = rng.dirichlet(np.full(k, 0.3), n)
    y_pred = np.argmax(proba, axis=1)
    got = evaluate(y_true, proba)
    want = {
        "loss": skm.log_loss(y_true, proba, labels=list(range(k))),
        "acc": skm.accuracy_score(y_true, y_pred),
    }
    for avg in ("micro", "macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        want |= {f"precision {avg}": p, f"recall {avg}": r, f"f1 {avg}": f}
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9, rel=0), key


def test_wire_round_trip_keeps_arrays_exact() -> None:
    arrays = [np.arange(12.0).reshape(3, 4), np.array([1, 2, 3], dtype=np.int64), np.zeros((0, 2))]
    message = wire.Message("train", {"round": 3, "token": "t"}, arrays)
    got = _read(wire.encode(message))
    assert (got.kind, got.fields) == ("train", {"round": 3, "token": "t"})
    for a, b in zip(got.arrays, arrays, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def _read(frame: bytes, limit: int = 1 << 20) -> wire.Message:
    async def read() -> wire.Message:
        reader = asyncio.StreamReader()
        reader.feed_data(frame)
        reader.feed_eof()
        return await wire.read_message(reader, limit)

    return asyncio.run(read())


def _frame(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">4sIQ", b"SEFL", len(header), len(body)) + header + body


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\n", "not a seel.fl frame"),
        (struct.pack(">4sIQ", b"SEFL", 10, 1 << 40), "over the limit"),
        (_frame(b"{not json"), "not JSON"),
        (_frame(b"[1, 2]"), "not an object"),
        (_frame(b'{"kind": "train", "arrays": [5]}', b"abc"), "do not add up"),
        (_frame(b'{"kind": "x"}')[:-2], "cut short"),
        (b"", "connection closed"),
    ],
)
def test_wire_rejects_malformed_frames(frame: bytes, why: str) -> None:
    with pytest.raises(wire.WireError, match=why):
        _read(frame)


def test_wire_never_unpickles() -> None:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    body = buf.getvalue()
    header = f'{{"kind": "train", "arrays": [{len(body)}]}}'.encode()
    with pytest.raises(wire.WireError, match="bad array"):
        _read(_frame(header, body))


def test_fusion_iter_avg_and_fed_avg() -> None:
    a, b = [np.array([0.0, 2.0])], [np.array([4.0, 6.0])]
    assert np.allclose(fuse("IterAvgFusionHandler", [(a, 1), (b, 3)])[0], [2.0, 4.0])
    assert np.allclose(fuse("FedAvgFusionHandler", [(a, 1), (b, 3)])[0], [3.0, 5.0])


def test_shipped_configs_load() -> None:
    agg = load_aggregator_config(CONFIGS / "config_agg.yml")
    assert (agg.rounds, agg.num_parties, agg.listen.port) == (4, 2, 5000)
    parties = [load_party_config(CONFIGS / f"config_party{i}.yml") for i in (0, 1)]
    assert [p.listen.port for p in parties] == [8085, 8086]


def test_ibm_fl_class_paths_are_accepted(tmp_path: Path) -> None:
    config = tmp_path / "agg.yml"
    config.write_text(
        "connection:\n  name: FlaskConnection\n  path: ibmfl.connection.flask_connection\n"
        "  info: {ip: 127.0.0.1, port: 5000, tls_config: {enable: false}}\n  sync: false\n"
        "fusion:\n  name: FedAvgFusionHandler\n  path: ibmfl.aggregator.fusion.fedavg_fusion_handler\n"
        "protocol_handler:\n  name: ProtoHandler\n  path: ibmfl.aggregator.protohandler.proto_handler\n"
        "hyperparams:\n  global: {rounds: 2, max_timeout: 60, num_parties: 2, perc_quorum: 1,"
        " termination_accuracy: 0.9}\n  local: {training: {max_iter: 2}}\n"
        "data:\n  name: MnistSklearnDataHandler\n  path: x\n  info: {dataset: digits}\n"
    )
    agg = load_aggregator_config(config)
    assert agg.fusion == "FedAvgFusionHandler" and agg.local.epochs == 2


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("connection: {info: {port: 5000}}\nhyperparams: {global: {perc_quorum: 0}}", "hyperparams.global.perc_quorum"),
        ("connection: {info: {port: 70000}}", "connection.info.port"),
        ("connection: {info: {port: 5000}}\nhyperparams: {global: {max_timeout: -1}}", "hyperparams.global.max_timeout"),
        ("connection: {info: {port: 5000}}\nmodel: {name: KerasFLModel}", "model.name"),
        ("connection: {info: {port: 5000}}\nhyperparams: {global: {rounds: true}}", "hyperparams.global.rounds"),
        ("fusion: {name: IterAvgFusionHandler}", "connection.info.port"),
        ("- a\n- b\n", ""),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    config = tmp_path / "agg.yml"
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_aggregator_config(config)
    assert info.value.key == key
    assert str(config) in str(info.value)


def test_digits_match_sklearn() -> None:
    from sklearn.datasets import load_digits as sk_load

    x, y = load_digits()
    ref = sk_load()
    assert np.array_equal(x * 16, ref.data) and np.array_equal(y, ref.target)


@pytest.mark.parametrize("split", ["iid", "dirichlet"])
def test_party_splits_are_disjoint_deterministic_and_apart_from_validation(split: str) -> None:
    specs = [DataSpec(split=split, alpha=0.3, seed=7, num_parties=3, party_index=i) for i in range(3)]
    parts = [party_split(s) for s in specs]
    again = party_split(specs[1])
    assert np.array_equal(again.x_train, parts[1].x_train)
    val = aggregator_split(specs[0])
    rows = [{r.tobytes() for r in a} for p in parts for a in (p.x_train, p.x_test)]
    total = sum(len(r) for r in rows)
    union = set().union(*rows)
    assert len(union) >= total - 30  # digits has a few duplicate images
    assert len(union & {r.tobytes() for r in val.x_test}) <= 10
    assert sum(len(p.y_train) + len(p.y_test) for p in parts) + len(val.y_test) == 1797


def test_dirichlet_skews_labels() -> None:
    specs = [DataSpec(split="dirichlet", alpha=0.1, seed=1, num_parties=2, party_index=i) for i in range(2)]
    hist = [np.bincount(party_split(s).y_train, minlength=10) / len(party_split(s).y_train) for s in specs]
    assert np.abs(hist[0] - hist[1]).sum() > 0.5


def test_npz_data_in_ibm_fl_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "party.npz"
    np.savez(path, x_train=rng.random((20, 4, 4)), y_train=rng.integers(0, 3, 20),
             x_test=rng.random((5, 4, 4)), y_test=rng.integers(0, 3, 5))
    split = party_split(DataSpec(npz_file=path))
    assert split.x_train.shape == (20, 16) and split.x_test.shape == (5, 16)
    np.savez(tmp_path / "bad.npz", x_train=np.zeros(3))
    with pytest.raises(DataError, match="missing array"):
        party_split(DataSpec(npz_file=tmp_path / "bad.npz"))


def test_a_party_model_takes_the_global_models_architecture() -> None:
    from seel.fl.config import ModelSpec
    from seel.fl.model import Model

    party = Model(ModelSpec(kind="mlp", hidden=8), n_features=64, n_classes=10)
    global_mlp = Model(ModelSpec(kind="mlp", hidden=24, seed=5), n_features=64, n_classes=10)
    assert party.adopt(global_mlp.weights) == "mlp hidden=24"
    assert party.shapes() == global_mlp.shapes()
    assert party.adopt(global_mlp.weights) is None
    logistic = Model(ModelSpec(kind="logistic"), n_features=64, n_classes=10)
    assert party.adopt(logistic.weights) == "logistic"
    other_data = Model(ModelSpec(kind="mlp", hidden=24), n_features=30, n_classes=10)
    assert party.adopt(other_data.weights) is None
    with pytest.raises(ValueError, match="shapes differ"):
        party.set_weights(other_data.weights)
