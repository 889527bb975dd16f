"""Write the data and model files an IBM FL sklearn config names; run with IBM FL's own Python.

Run by path (`python make_files.py --aggregator A.npz --party P0.npz --party P1.npz --model M`),
so it imports nothing of SEEL: the model is pickled by the scikit-learn that IBM FL will load it
with. The data is scikit-learn's bundled digits set (1,797 8x8 images, no download), as float64
in [0, 1], shuffled with `--seed`: a fifth is the aggregator's, the rest is dealt to the parties,
each keeping a fifth of its share for testing. Every file is IBM FL's `.npz` layout
(`x_train, y_train, x_test, y_test`); the model is `SGDClassifier(loss="log_loss")` with the ten
classes set, as IBM FL's examples write it (their `loss="log"` fails on scikit-learn >= 1.3).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def _save_npz(path: str, **arrays: Any) -> None:
    import numpy as np

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _split(x: Any, y: Any, test_fraction: float) -> dict[str, Any]:
    n_test = max(1, round(len(x) * test_fraction))
    return {
        "x_train": x[n_test:],
        "y_train": y[n_test:],
        "x_test": x[:n_test],
        "y_test": y[:n_test],
    }


def write_files(
    aggregator: list[str], parties: list[str], models: list[str], seed: int
) -> list[str]:
    """Write the files; returns their paths in the order written."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.asarray(digits.data, dtype=np.float64) / 16.0
    y = np.asarray(digits.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_agg = len(x) // 5
    written = []
    for path in aggregator:  # its test set is what the global model is scored on
        held_x, held_y = x[:n_agg], y[:n_agg]
        _save_npz(path, x_train=held_x, y_train=held_y, x_test=held_x, y_test=held_y)
        written.append(path)
    rest_x, rest_y = x[n_agg:], y[n_agg:]
    for i, path in enumerate(parties):
        share = slice(i, None, len(parties))
        _save_npz(path, **_split(rest_x[share], rest_y[share], 0.2))
        written.append(path)
    for path in models:
        import joblib
        from sklearn.linear_model import SGDClassifier

        model = SGDClassifier(loss="log_loss", penalty="l2", random_state=seed)
        model.classes_ = np.arange(10)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            joblib.dump(model, f)
        os.replace(path + ".tmp", path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aggregator", action="append", default=[], help="the aggregator's .npz")
    parser.add_argument("--party", action="append", default=[], help="a party's .npz, in order")
    parser.add_argument("--model", action="append", default=[], help="a model pickle")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in write_files(args.aggregator, args.party, args.model, args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
