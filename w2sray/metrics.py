"""Classification metrics computed without extra dependencies."""

from __future__ import annotations

import numpy as np

# What a run's metrics.json calls its results (written by w2sray/train/tasks.py, read by the
# sweep, searches and the analysis).
ACC = "acc"  # test accuracy
AUC = "auc"  # test ROC AUC
WEAK_LABEL_ACC = "weak_label_acc"  # accuracy of its split-B predictions against split B's truth
VAL_WEAK_ACC = "val_weak_acc"  # a search trial's, on its held-out part of split B: vs weak labels
VAL_GT_ACC = "val_gt_acc"  # the same against ground truth (a gt_val search's objective)
VAL_WEAK_AUC = "val_weak_auc"


def accuracy(labels: np.ndarray, p1: np.ndarray) -> float:
    """Fraction of examples whose argmax prediction (p1 > 0.5) matches the label."""
    labels = np.asarray(labels)
    return float(np.mean((np.asarray(p1) > 0.5).astype(int) == labels)) if len(labels) else np.nan


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; NaN with one class."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
