"""Normalized entropy (NE): mean log loss divided by the entropy of the empirical positive rate."""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def normalized_entropy(labels: np.ndarray, probs: np.ndarray, mask: np.ndarray | None = None) -> float:
    """NE of predictions ``probs`` (N,) for binary ``labels`` (N,), over rows where ``mask`` is 1.

    NE = -mean(y log p + (1-y) log(1-p)) / -(r log r + (1-r) log(1-r)), r = mean(y).
    Returns NaN when no row applies or every label is the same (the entropy is 0).
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0 - _EPS)
    if mask is not None:
        keep = np.asarray(mask) > 0
        y, p = y[keep], p[keep]
    if len(y) == 0:
        return float("nan")
    rate = y.mean()
    if rate <= 0.0 or rate >= 1.0:
        return float("nan")
    log_loss = -np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))
    entropy = -(rate * np.log(rate) + (1.0 - rate) * np.log(1.0 - rate))
    return float(log_loss / entropy)


def relative_ne_gain(ne: float, baseline_ne: float) -> float:
    """Relative NE reduction against a baseline, in percent (positive = better)."""
    return 100.0 * (baseline_ne - ne) / baseline_ne
