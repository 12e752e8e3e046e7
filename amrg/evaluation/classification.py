"""The stage-1 classifier's figures: per-observation ROC-AUC and F1 (threshold 0.5, present = label 1) and their
macro means, as logged every validation epoch and used to keep the best epoch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn's `roc_auc_score`); NaN without both classes, where scikit-learn
    raises (an observation absent from a validation split must not stop the epoch)."""
    positive = np.asarray(positive).astype(bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, np.asarray(scores, dtype=np.float64)))


def classification_report(probabilities: np.ndarray, labels: np.ndarray,
                          observation_names: Sequence[str] | None = None) -> dict:
    """Per-observation AUC and F1 (threshold 0.5; present = label 1) and their macro means.

    Args:
        probabilities: `(studies, n)` classifier probabilities, column `i` for `observation_names[i]`.
        labels: `(studies, n)` labels in the same column order (1, 0, -1 or NaN).
        observation_names: the names of the columns, a model's `config.observation_names` (default: the 14
            `CHEXPERT_OBSERVATIONS`); `per_observation` is keyed by them, in this order.
    """
    names = list(CHEXPERT_OBSERVATIONS if observation_names is None else observation_names)
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    if probabilities.ndim != 2 or probabilities.shape != labels.shape or probabilities.shape[1] != len(names):
        # A silent mismatch would score each observation against another's labels.
        raise ValueError(f"`probabilities` and `labels` must both be (studies, {len(names)}), one column per "
                         f"observation of `observation_names` {names}, got {probabilities.shape} and {labels.shape}")
    present = labels == 1
    rows = {}
    for index, name in enumerate(names):
        predicted = probabilities[:, index] >= 0.5
        rows[name] = {"auc": roc_auc(probabilities[:, index], present[:, index]),
                      "f1": float(f1_score(present[:, index], predicted, zero_division=0)),
                      "positives": int(present[:, index].sum())}
    aucs = [row["auc"] for row in rows.values() if not np.isnan(row["auc"])]
    return {"macro_auc": float(np.mean(aucs)) if aucs else float("nan"),
            "macro_f1": float(np.mean([row["f1"] for row in rows.values()])), "per_observation": rows}


__all__ = ["classification_report", "roc_auc"]
