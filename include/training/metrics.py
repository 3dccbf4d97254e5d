"""Holdout metrics for probabilistic classifiers."""

from __future__ import annotations

import numpy as np


def expected_calibration_error(y_true, y_prob, bins: int = 10) -> float:
    """Mean |observed rate - mean predicted probability| over equal-width bins, weighted by bin size."""
    y_true, y_prob = np.asarray(y_true, dtype=float), np.asarray(y_prob, dtype=float)
    if len(y_true) == 0:
        return float("nan")
    idx = np.minimum((y_prob * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(y_true[mask].mean() - y_prob[mask].mean())
    return float(ece)


def evaluate(y_true, y_prob) -> dict[str, float]:
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    y_true = np.asarray(y_true, dtype=int)
    y_prob = np.clip(np.asarray(y_prob, dtype=float), 1e-7, 1 - 1e-7)
    auc = float(roc_auc_score(y_true, y_prob)) if len(set(y_true)) > 1 else float("nan")
    return {
        "auc": auc,
        "log_loss": float(log_loss(y_true, y_prob, labels=[0, 1])),
        "brier": float(brier_score_loss(y_true, y_prob)),
        "ece": expected_calibration_error(y_true, y_prob),
        "rows": float(len(y_true)),
        "positive_rate": float(y_true.mean()) if len(y_true) else float("nan"),
    }
