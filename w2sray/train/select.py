"""Model selection during training (``train.select``): hold out part of a run's own training
rows, score the model on them against the labels it trains on every ``every`` steps, and keep
the best state.

A transfer run's training labels are its supervisor's weak labels, so it selects on weak
labels: never on split B's ground truth, never on test rows (the functions here are given the
run's training rows and targets only). A ground-truth run selects on held-out rows of split A
the same way. The paper notes naive fine-tuning overfits to weak errors with more training;
this is the early stopping EleutherAI's w2s does on weak labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from w2sray.metrics import roc_auc

METRICS = ("weak_val_auc", "weak_val_loss")  # higher is better / lower is better
DEFAULTS = {"metric": "weak_val_auc", "every": 50, "val_frac": 0.1}


def holdout(
    n: int, val_frac: float, seed: int, salt: int = 104729
) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of ``n`` training rows: a fixed cut drawn from ``seed``
    (the split seed) and ``salt`` (one per use: selection, a search's split B), so every run
    of a split validates on the same rows."""
    order = np.random.default_rng([seed, salt]).permutation(n)
    n_val = min(n - 1, max(1, int(round(n * val_frac))))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def score(metric: str, targets: np.ndarray, p1: np.ndarray) -> float:
    """``metric`` of class-1 probabilities ``p1`` against training targets (hard labels, or
    soft weak labels as [p0, p1] rows)."""
    t1 = np.asarray(targets, dtype=np.float64)
    t1 = t1[:, 1] if t1.ndim == 2 else t1
    p = np.clip(np.asarray(p1, dtype=np.float64), 1e-7, 1 - 1e-7)
    if metric == "weak_val_auc":
        return float(roc_auc((t1 > 0.5).astype(np.int64), p))
    if metric == "weak_val_loss":
        return float(-np.mean(t1 * np.log(p) + (1 - t1) * np.log(1 - p)))
    raise ValueError(f"unknown selection metric {metric!r} ({', '.join(METRICS)})")


def _state(module: torch.nn.Module) -> list[torch.Tensor]:
    """The tensors holding this rank's parameter values: the whole parameter, or under ZeRO-3
    this rank's partition (``ds_tensor``), which is what later forwards gather from."""
    return [p.ds_tensor if hasattr(p, "ds_tensor") else p.data for p in module.parameters()]


@dataclass
class Selector:
    """Scores the model every ``every`` steps (and at the last) with ``evaluate`` (a collective
    call every rank makes at the same steps) and keeps a CPU copy of the best state."""

    metric: str
    every: int
    total_steps: int
    evaluate: Callable[[], float]
    curve: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    best_value: float | None = None
    _best: list[torch.Tensor] | None = None

    def better(self, value: float) -> bool:
        if self.best_value is None or np.isnan(self.best_value):
            return not np.isnan(value)
        if self.metric == "weak_val_loss":
            return value < self.best_value
        return value > self.best_value

    def on_step(self, step: int, module: torch.nn.Module) -> None:
        if step % self.every and step != self.total_steps:
            return
        value = self.evaluate()
        self.curve.append((step, value))
        if self.better(value):
            self.best_step, self.best_value = step, value
            self._best = [t.detach().to("cpu", copy=True) for t in _state(module)]

    @torch.no_grad()
    def restore(self, module: torch.nn.Module) -> None:
        """Put the best state back (a no-op when the last step was the best)."""
        if self._best is None or self.best_step == self.total_steps:
            return
        for t, saved in zip(_state(module), self._best, strict=True):
            t.copy_(saved.to(t.device))

    def metrics(self) -> dict[str, Any]:
        return {
            "select_metric": self.metric,
            "select_step": self.best_step,
            "select_value": self.best_value,
            "select_curve": {
                "step": [s for s, _ in self.curve],
                "value": [v for _, v in self.curve],
            },
        }
