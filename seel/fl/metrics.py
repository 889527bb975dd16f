"""Classification metrics, computed as scikit-learn computes them (checked to 1e-9 in tests).

IBM FL's multi-class metrics dict, in its key order: `acc`, then `f1`, `precision` and `recall`
`micro`, then the same `macro`, then `weighted`. `loss` (first) is the log loss of the predicted
probabilities.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def log_loss(y_true: npt.NDArray[np.int64], proba: npt.NDArray[np.float64]) -> float:
    """Mean negative log-likelihood of the true class; probabilities clipped to [eps, 1-eps]."""
    p = proba / proba.sum(axis=1, keepdims=True)
    eps = np.finfo(p.dtype).eps
    p = np.clip(p, eps, 1 - eps)
    picked = p[np.arange(len(y_true)), y_true]
    return float(-np.mean(np.log(picked)))


def _safe_div(
    num: npt.NDArray[np.float64], den: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def classification_metrics(
    y_true: npt.NDArray[np.int64], y_pred: npt.NDArray[np.int64]
) -> dict[str, float]:
    """Accuracy and micro/macro/weighted precision, recall and F1 (zero division gives 0)."""
    labels = np.union1d(y_true, y_pred)
    t = y_true[:, None] == labels[None, :]
    p = y_pred[:, None] == labels[None, :]
    tp = (t & p).sum(axis=0).astype(np.float64)
    fp = (~t & p).sum(axis=0).astype(np.float64)
    fn = (t & ~p).sum(axis=0).astype(np.float64)
    support = tp + fn

    out: dict[str, float] = {"acc": float(np.mean(y_true == y_pred))}
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    micro_tp, micro_fp, micro_fn = tp.sum(), fp.sum(), fn.sum()
    micro = {
        "precision": micro_tp / (micro_tp + micro_fp) if micro_tp + micro_fp else 0.0,
        "recall": micro_tp / (micro_tp + micro_fn) if micro_tp + micro_fn else 0.0,
        "f1": 2 * micro_tp / (2 * micro_tp + micro_fp + micro_fn) if micro_tp else 0.0,
    }
    weights = support / support.sum() if support.sum() else np.zeros_like(support)
    per_class = {"f1": f1, "precision": precision, "recall": recall}
    for name in per_class:
        out[f"{name} micro"] = float(micro[name])
    for name, values in per_class.items():
        out[f"{name} macro"] = float(np.mean(values))
    for name, values in per_class.items():
        out[f"{name} weighted"] = float(np.sum(values * weights))
    return out


def evaluate(y_true: npt.NDArray[np.int64], proba: npt.NDArray[np.float64]) -> dict[str, float]:
    """IBM FL's metrics dict for a model's predicted probabilities, with `loss` first."""
    y_pred = np.argmax(proba, axis=1).astype(np.int64)
    return {"loss": log_loss(y_true, proba), **classification_metrics(y_true, y_pred)}
