"""A search trial's task (the search part, w2sray/methods/search.py): it trains on split B less
a held-out part, with the weak labels, and is judged on that part against the weak labels
(``weak_val``) or the ground truth (``gt_val``). The test split is never passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from w2sray.artifacts import VAL_PREDICTIONS
from w2sray.metrics import VAL_GT_ACC, VAL_WEAK_ACC, VAL_WEAK_AUC, accuracy, roc_auc
from w2sray.settings import DataRef
from w2sray.store import Store
from w2sray.train.select import holdout
from w2sray.train.tasks import Evaluation, PredictOn, load_weak_p1


@dataclass
class SearchInputs:
    """What a search trial sees: split B cut into a training part (weak labels) and a held-out
    validation part with its weak labels and its ground truth. Nothing from the test split."""

    train_texts: list[str]
    train_targets: np.ndarray  # [N, 2] soft weak labels
    val_texts: list[str]
    val_weak: np.ndarray  # weak model's hard labels on the validation part
    val_gt: np.ndarray  # ground truth on the validation part (used only if metric is gt_val)


def search_inputs(
    weak_texts: list[str],
    weak_gt: list[int],
    weak_p1: np.ndarray,
    val_frac: float,
    split_seed: int,
) -> SearchInputs:
    """Cut split B for a search trial. Takes split B alone (no test split is passed in), and the
    cut depends only on the split seed, so every trial of a search validates on the same part."""

    train, val = holdout(len(weak_texts), val_frac, split_seed, salt=7919)
    p1 = np.asarray(weak_p1, dtype=np.float32)
    return SearchInputs(
        train_texts=[weak_texts[i] for i in train],
        train_targets=np.stack([1 - p1[train], p1[train]], axis=1),
        val_texts=[weak_texts[i] for i in val],
        val_weak=(p1[val] > 0.5).astype(np.int64),
        val_gt=np.asarray(weak_gt)[val],
    )


class SearchTrial:
    """A search trial: trains on part of split B with its weak labels and is judged on the
    held-out rest (search_inputs). The test split is never looked at."""

    def __init__(self, run: dict[str, Any], splits: Any, store: Store):
        self.found = search_inputs(
            splits.weak_texts,
            splits.weak_labels,
            load_weak_p1(run, splits.weak_ids, store),
            run["val_frac"],
            DataRef.from_dict(run["dataset"]).split_seed,
        )
        self.texts, self.targets = self.found.train_texts, self.found.train_targets

    def evaluate(self, predict_on: PredictOn) -> Evaluation:
        f = self.found
        val_p1, truncated = predict_on(f.val_texts)
        metrics = {VAL_WEAK_ACC: accuracy(f.val_weak, val_p1)}
        metrics[VAL_GT_ACC] = accuracy(f.val_gt, val_p1)
        metrics[VAL_WEAK_AUC] = roc_auc(f.val_weak, val_p1)
        table = pd.DataFrame({"weak": f.val_weak, "label": f.val_gt, "p1": val_p1})
        return Evaluation(metrics, {VAL_PREDICTIONS: table}, truncated, 0)
