"""The model and the data of the app: SEEL's built-in engine's softmax regression and digits split.

The split is `seel.fl.data`'s, so partition i of N here holds the same samples as party i of N in
a built-in-engine sweep with the same seed, split and alpha; nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from seel.fl.config import DataSpec, LocalParams, ModelSpec
from seel.fl.data import Split, aggregator_split, party_split
from seel.fl.model import Model

NUM_FEATURES = 64
NUM_CLASSES = 10


def data_spec(run_config: dict[str, Any], partition_id: int = 0, num_partitions: int = 1) -> DataSpec:
    """The data settings the built-in engine would use for this partition."""
    return DataSpec(
        seed=int(run_config["seed"]),
        num_parties=num_partitions,
        party_index=partition_id,
        split=str(run_config["split"]),
        alpha=float(run_config["alpha"]),
    )


def load_partition(run_config: dict[str, Any], partition_id: int, num_partitions: int) -> Split:
    """A SuperNode's train and test data."""
    return party_split(data_spec(run_config, partition_id, num_partitions))


def load_validation(run_config: dict[str, Any]) -> Split:
    """The server's held-out validation data."""
    return aggregator_split(data_spec(run_config))


def new_model(run_config: dict[str, Any]) -> Model:
    """A softmax regression with zero weights."""
    return Model(ModelSpec(kind="logistic", seed=int(run_config["seed"])), NUM_FEATURES, NUM_CLASSES)


def train(model: Model, split: Split, run_config: dict[str, Any], round_: int) -> None:
    """Local mini-batch SGD."""
    params = LocalParams(
        epochs=int(run_config["local-epochs"]),
        batch_size=int(run_config["batch-size"]),
        lr=float(run_config["lr"]),
    )
    model.fit(split.x_train, split.y_train, params, np.random.default_rng([int(run_config["seed"]), round_]))


def evaluate(model: Model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(loss, accuracy) on these samples."""
    proba = model.predict_proba(x)
    loss = float(-np.mean(np.log(proba[np.arange(len(y)), y] + 1e-12)))
    accuracy = float(np.mean(proba.argmax(axis=1) == y))
    return loss, accuracy
