"""Model-quality metrics in NumPy, the same code for ``train`` (held-out rows) and ``replay``.

Classifiers are scored on the probability of the positive class (the last class in sorted
order: ``"1"`` of ``"0"/"1"``, ``"yes"`` of ``"no"/"yes"``) for AUC, log loss and
calibration; on the predicted label for accuracy. Regressors on the value.

>>> round(auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
0.75
>>> round(psi([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]), 6)
0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

EPS = 1e-15


def auc(y: Any, score: Any) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if one class."""
    yt = np.asarray(y, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    pos = int(yt.sum())
    neg = len(yt) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[yt].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def log_loss(y: Any, p: Any) -> float:
    """Binary cross-entropy of positive-class probabilities, clipped to [1e-15, 1 - 1e-15]."""
    yt = np.asarray(y, dtype=np.float64)
    pp = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return float(-np.mean(yt * np.log(pp) + (1 - yt) * np.log(1 - pp)))


def calibration(y: Any, p: Any, bins: int = 10) -> list[dict[str, float]]:
    """Equal-width probability bins: mean predicted, observed positive rate, row count."""
    yt = np.asarray(y, dtype=np.float64)
    pp = np.asarray(p, dtype=np.float64)
    # a probability that is not finite falls in no bin (nor does one below 0 by a bin)
    finite = np.isfinite(pp)
    yt, pp = yt[finite], pp[finite]
    idx = np.minimum((pp * bins).astype(np.int64), bins - 1)
    inside = idx >= 0
    yt, pp, idx = yt[inside], pp[inside], idx[inside]
    # one pass each for counts and sums, not a mask per bin
    counts = np.bincount(idx, minlength=bins)
    predicted = np.bincount(idx, weights=pp, minlength=bins)
    observed = np.bincount(idx, weights=yt, minlength=bins)
    return [
        {
            "bin": b,
            "predicted": float(predicted[b] / counts[b]),
            "observed": float(observed[b] / counts[b]),
            "rows": int(counts[b]),
        }
        for b in np.flatnonzero(counts).tolist()
    ]


def ece(y: Any, p: Any, bins: int = 10) -> float:
    """Expected calibration error: row-weighted mean |observed - predicted| over the bins."""
    table = calibration(y, p, bins)
    total = sum(b["rows"] for b in table)
    return float(sum(b["rows"] * abs(b["observed"] - b["predicted"]) for b in table) / total)


def psi(expected: Any, actual: Any, bins: int = 10) -> float:
    """Population stability index of ``actual`` against ``expected`` (bins: deciles of expected).

    Empty bins count as 1e-4 of the rows, so the index stays finite.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if len(e) == 0 or len(a) == 0:
        return float("nan")
    edges = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1)[1:-1]))
    ec = np.bincount(np.searchsorted(edges, e, side="right"), minlength=len(edges) + 1) / len(e)
    ac = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1) / len(a)
    ec = np.maximum(ec, 1e-4)
    ac = np.maximum(ac, 1e-4)
    return float(np.sum((ac - ec) * np.log(ac / ec)))


def classification_metrics(
    y: Sequence[str] | Any, predicted: Sequence[str] | Any, p_positive: Any, positive: str
) -> dict[str, float]:
    """``auc``, ``accuracy``, ``log_loss``, ``ece`` and ``rows`` for one set of answers."""
    labels = np.asarray(y, dtype=object)
    yt = labels == positive
    out = {
        "rows": float(len(labels)),
        "accuracy": float(np.mean(labels == np.asarray(predicted, dtype=object)))
        if len(labels)
        else float("nan"),
    }
    if len(labels):
        out["auc"] = auc(yt, p_positive)
        out["log_loss"] = log_loss(yt, p_positive)
        out["ece"] = ece(yt, p_positive)
    return out


def regression_metrics(y: Any, value: Any) -> dict[str, float]:
    """``rmse``, ``mae`` and ``rows``."""
    yt = np.asarray(y, dtype=np.float64)
    v = np.asarray(value, dtype=np.float64)
    if len(yt) == 0:
        return {"rows": 0.0}
    err = v - yt
    return {
        "rows": float(len(yt)),
        "rmse": float(np.sqrt(np.mean(err * err))),
        "mae": float(np.mean(np.abs(err))),
    }
