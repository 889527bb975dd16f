"""Datasets and their split between the aggregator and the parties.

The default dataset is scikit-learn's bundled digits set, read from the file scikit-learn ships
without importing scikit-learn (its import alone costs about a second). A user's own data comes in
IBM FL's format: an `.npz` file holding `x_train, y_train, x_test, y_test`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from seel.fl.config import DataSpec

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_MIN_PARTY_SAMPLES = 10


class DataError(Exception):
    """Data that cannot be loaded or split as asked."""


@dataclass(frozen=True)
class Split:
    """Train and test arrays of one process."""

    x_train: FloatArray
    y_train: IntArray
    x_test: FloatArray
    y_test: IntArray
    num_classes: int


def digits_path() -> Path:
    """Path of scikit-learn's bundled digits file, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("scikit-learn is not installed; the digits dataset ships with it")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seel"


def load_digits() -> tuple[FloatArray, IntArray]:
    """The 1,797 8x8 digit images as rows of 64 features scaled to [0, 1], with their labels.

    The parsed table is cached as `.npy` (keyed by the source file's size and time), because
    every process of every trial loads it and parsing the CSV costs more than reading it.
    """
    source = digits_path()
    stat = source.stat()
    cached = _cache_dir() / f"digits-{stat.st_size}-{stat.st_mtime_ns}.npy"
    try:
        raw = np.load(cached, allow_pickle=False)
    except (OSError, ValueError):
        raw = np.loadtxt(source, delimiter=",", dtype=np.float64)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            with tmp.open("wb") as f:
                np.save(f, raw, allow_pickle=False)
            tmp.replace(cached)
        except OSError:
            pass  # a read-only home: parse every time
    return raw[:, :-1] / 16.0, raw[:, -1].astype(np.int64)


def _load_npz(path: Path) -> tuple[FloatArray, IntArray, FloatArray, IntArray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except KeyError as exc:
        raise DataError(f"{path}: missing array {exc}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: {exc}") from None
    x_train, y_train, x_test, y_test = arrays
    return (
        x_train.reshape(len(x_train), -1).astype(np.float64),
        y_train.reshape(-1).astype(np.int64),
        x_test.reshape(len(x_test), -1).astype(np.float64),
        y_test.reshape(-1).astype(np.int64),
    )


def _partition(y: IntArray, spec: DataSpec, rng: np.random.Generator) -> list[IntArray]:
    """Indices into `y` for each party: an even iid split or a label-skewed Dirichlet one."""
    n = len(y)
    if spec.split == "iid":
        return [
            np.asarray(p, dtype=np.int64)
            for p in np.array_split(rng.permutation(n), spec.num_parties)
        ]
    classes = np.unique(y)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(spec.num_parties)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet(np.full(spec.num_parties, spec.alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for party, chunk in enumerate(np.split(idx, cuts)):
                parts[party].extend(chunk.tolist())
        if min(len(p) for p in parts) >= _MIN_PARTY_SAMPLES:
            return [rng.permutation(np.asarray(p, dtype=np.int64)) for p in parts]
    raise DataError(
        f"dirichlet split with alpha={spec.alpha} left a party with fewer than "
        f"{_MIN_PARTY_SAMPLES} samples; raise alpha or lower num_parties"
    )


def _digits_pool(spec: DataSpec) -> tuple[FloatArray, IntArray, FloatArray, IntArray]:
    """The aggregator's validation split and the pool shared out to parties."""
    x, y = load_digits()
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(y))
    n_val = max(1, round(len(y) * spec.validation_fraction))
    val, pool = order[:n_val], order[n_val:]
    return x[val], y[val], x[pool], y[pool]


def aggregator_split(spec: DataSpec) -> Split:
    """The aggregator's validation data (its `x_test`, `y_test`); no training data."""
    if spec.npz_file is not None:
        _, _, x_test, y_test = _load_npz(spec.npz_file)
        num_classes = spec.num_classes or int(y_test.max()) + 1
    else:
        x_test, y_test, _, _ = _digits_pool(spec)
        num_classes = spec.num_classes or 10
    empty_x = np.empty((0, x_test.shape[1]))
    return Split(empty_x, np.empty(0, dtype=np.int64), x_test, y_test, num_classes)


def party_split(spec: DataSpec) -> Split:
    """A party's local train and test data."""
    if spec.npz_file is not None:
        x_train, y_train, x_test, y_test = _load_npz(spec.npz_file)
        num_classes = spec.num_classes or int(max(y_train.max(), y_test.max())) + 1
        return Split(x_train, y_train, x_test, y_test, num_classes)
    _, _, x_pool, y_pool = _digits_pool(spec)
    rng = np.random.default_rng([spec.seed, 1])
    mine = _partition(y_pool, spec, rng)[spec.party_index]
    n_test = max(1, round(len(mine) * spec.test_fraction))
    test, train = mine[:n_test], mine[n_test:]
    return Split(x_pool[train], y_pool[train], x_pool[test], y_pool[test], spec.num_classes or 10)
