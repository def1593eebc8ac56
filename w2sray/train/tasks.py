"""What a run trains on, by run kind: ground truth (split A), weak labels on split B (a
transfer, or a step of a bootstrapping chain), or a search trial's part of split B (the search
part's own task: w2sray/methods/search_trial.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from w2sray.artifacts import TEST_PREDICTIONS, WEAK_LABELS
from w2sray.metrics import ACC, AUC, WEAK_LABEL_ACC, accuracy, roc_auc
from w2sray.store import Store


def load_weak_p1(run: dict[str, Any], weak_ids: Any, store: Store) -> np.ndarray:
    """The upstream run's class-1 probabilities on split B (a GT run's, or a bootstrapping
    step's), checked against split B's example ids ``weak_ids``."""
    weak_key = run["upstream"][0]
    weak = store.read_parquet(weak_key, WEAK_LABELS)
    if not np.array_equal(weak["id"].to_numpy(), weak_ids):
        raise ValueError(
            f"weak labels of run {weak_key} do not match split B of run {run['key']}: "
            "their example ids differ"
        )
    return weak["p1"].to_numpy(dtype=np.float32)


def load_targets(run: dict[str, Any], splits: Any, store: Store) -> tuple[list[str], np.ndarray]:
    """Training texts and soft targets [N, 2]: ground truth for gt runs, the upstream run's
    predictions on split B for transfers."""
    if run["kind"] == "gt":
        y = np.asarray(splits.gt_labels)
        return splits.gt_texts, np.stack([1 - y, y], axis=1).astype(np.float32)
    p1 = load_weak_p1(run, splits.weak_ids, store)
    return splits.weak_texts, np.stack([1 - p1, p1], axis=1)


# predict_on(texts) -> (class-1 probabilities, how many texts were cut at max_length)
PredictOn = Callable[[list[str]], tuple[np.ndarray, int]]


@dataclass
class Evaluation:
    """What a trained run is judged by: its metrics, the tables rank 0 stores (artifact name ->
    frame), and how many evaluated texts were truncated."""

    metrics: dict[str, float]
    tables: dict[str, pd.DataFrame]
    truncated: int
    n_test: int


class Supervised:
    """A ground-truth run (split A's labels) or a transfer (its upstream run's predictions on
    split B). Judged on the test split; also predicts split B, since a GT run's predictions
    there are weak labels and a transfer's feed the next step of a bootstrapping chain."""

    def __init__(self, run: dict[str, Any], splits: Any, store: Store):
        self.splits = splits
        self.texts, self.targets = load_targets(run, splits, store)

    def evaluate(self, predict_on: PredictOn) -> Evaluation:
        s = self.splits
        test_p1, truncated = predict_on(s.test_texts)
        weak_p1, _ = predict_on(s.weak_texts)
        test_y = np.asarray(s.test_labels)
        metrics = {ACC: accuracy(test_y, test_p1), AUC: roc_auc(test_y, test_p1)}
        metrics[WEAK_LABEL_ACC] = accuracy(np.asarray(s.weak_labels), weak_p1)
        tables = {
            TEST_PREDICTIONS: pd.DataFrame({"id": s.test_ids, "label": test_y, "p1": test_p1}),
            WEAK_LABELS: pd.DataFrame({"id": s.weak_ids, "p1": weak_p1}),
        }
        return Evaluation(metrics, tables, truncated, len(s.test_texts))


def task_for(kind: str) -> Any:
    """Run kind -> what it trains on and how it is judged (a class taking (run, splits,
    store)); pretraining, features and probes have their own entry points."""
    from w2sray.methods.search_trial import SearchTrial

    return {"gt": Supervised, "transfer": Supervised, "search": SearchTrial}[kind]
