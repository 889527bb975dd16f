"""Models trained with mini-batch SGD: multinomial logistic regression and a one-hidden-layer MLP.

Weights are a list of numpy arrays: that list is what goes over the wire and what fusion averages.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from seel.fl.config import LocalParams, ModelSpec

Weights = list[npt.NDArray[np.float64]]


def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


class Model:
    """A classifier whose parameters are `weights`."""

    def __init__(self, spec: ModelSpec, n_features: int, n_classes: int) -> None:
        self.spec = spec
        self.n_features = n_features
        self.n_classes = n_classes
        rng = np.random.default_rng(spec.seed)
        if spec.kind == "mlp":
            h = spec.hidden
            self.weights: Weights = [
                rng.normal(0.0, np.sqrt(2.0 / n_features), (n_features, h)),
                np.zeros(h),
                rng.normal(0.0, np.sqrt(1.0 / h), (h, n_classes)),
                np.zeros(n_classes),
            ]
        else:
            self.weights = [np.zeros((n_features, n_classes)), np.zeros(n_classes)]

    def shapes(self) -> list[tuple[int, ...]]:
        return [w.shape for w in self.weights]

    def adopt(self, weights: Weights) -> str | None:
        """Take the architecture of `weights` (the global model) when it is another logistic or
        MLP model of the same data; a description of the change, or None if nothing changed."""
        shapes = [w.shape for w in weights]
        if shapes == self.shapes():
            return None
        f, c = self.n_features, self.n_classes
        if shapes == [(f, c), (c,)]:
            self.spec = replace(self.spec, kind="logistic")
        elif len(shapes) == 4 and shapes[0][:1] == (f,) and shapes[2][1:] == (c,):
            hidden = shapes[0][1] if len(shapes[0]) == 2 else -1
            if shapes != [(f, hidden), (hidden,), (hidden, c), (c,)]:
                return None
            self.spec = replace(self.spec, kind="mlp", hidden=hidden)
        else:
            return None
        self.weights = [np.array(w, dtype=np.float64) for w in weights]
        return self.spec.kind + (f" hidden={self.spec.hidden}" if self.spec.kind == "mlp" else "")

    def set_weights(self, weights: Weights) -> None:
        """Replace the weights; shapes must match this model's."""
        if [w.shape for w in weights] != self.shapes():
            raise ValueError(
                f"model shapes differ: got {[w.shape for w in weights]}, have {self.shapes()}"
            )
        self.weights = [np.array(w, dtype=np.float64) for w in weights]

    def predict_proba(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if self.spec.kind == "mlp":
            w1, b1, w2, b2 = self.weights
            return _softmax(np.maximum(x @ w1 + b1, 0.0) @ w2 + b2)
        w, b = self.weights
        return _softmax(x @ w + b)

    def _gradients(self, x: npt.NDArray[np.float64], onehot: npt.NDArray[np.float64]) -> Weights:
        n = len(x)
        if self.spec.kind == "mlp":
            w1, b1, w2, b2 = self.weights
            hidden = np.maximum(x @ w1 + b1, 0.0)
            delta = (_softmax(hidden @ w2 + b2) - onehot) / n
            back = (delta @ w2.T) * (hidden > 0)
            return [x.T @ back, back.sum(axis=0), hidden.T @ delta, delta.sum(axis=0)]
        w, b = self.weights
        delta = (_softmax(x @ w + b) - onehot) / n
        return [x.T @ delta, delta.sum(axis=0)]

    def fit(
        self,
        x: npt.NDArray[np.float64],
        y: npt.NDArray[np.int64],
        params: LocalParams,
        rng: np.random.Generator,
    ) -> None:
        """Mini-batch SGD over `params.epochs` passes of shuffled data."""
        onehot = np.eye(self.n_classes)[y]
        for _ in range(params.epochs):
            order = rng.permutation(len(x))
            for start in range(0, len(x), params.batch_size):
                batch = order[start : start + params.batch_size]
                grads = self._gradients(x[batch], onehot[batch])
                for w, g in zip(self.weights, grads, strict=True):
                    w -= params.lr * g
