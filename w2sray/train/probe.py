"""Linear probes on cached features (``train.probe``): the backbone stays frozen and only a
2-way head is trained, on the pooled features its model's ``features`` run computed once and
stored (w2sray/train/features.py).

A probe run is an ordinary ground-truth or transfer run (same kinds, same artifacts, so
analysis, PGR and reports need nothing new) whose training reads ``features.npz`` from the
store instead of loading the backbone: the backbone is never built in a probe run. Its loss is
the run's loss (w2sray/losses.py) on the head's logits, so xent, logconf, ... work as they do
for fine-tuning, and its split-B predictions are weak labels like any GT run's.

Heads, on features standardised with the training rows' mean and deviation (an affine change
of variables: the same family of linear heads, but one learning rate fits every backbone's
feature scale):

- ``linear``: a linear layer trained by minibatch AdamW (``lr``, decoupled ``weight_decay``,
  cosine decay), ``epochs`` passes of ``batch_size`` rows in a seeded order;
- ``logreg``: logistic regression fitted full-batch by L-BFGS (strong-Wolfe line search),
  ``epochs`` iterations, with an L2 penalty ``weight_decay / 2 * ||W||^2`` on the weights.

The head trains in plain torch, not DeepSpeed: it is a few thousand parameters on one worker,
where an engine would add only its start-up and copies.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from w2sray.artifacts import FEATURES, TEST_PREDICTIONS, WEAK_LABELS, record_files
from w2sray.settings import DataRef, ProbeSettings
from w2sray.store import Store, parquet_bytes
from w2sray.train.tasks import load_weak_p1

HEADS = ("linear", "logreg")
FIELDS = ("head", "epochs", "lr", "weight_decay", "batch_size")
# Per head; batch_size None: the run's train.batch_size (linear), unused by logreg (full batch).
# Chosen on the quickstart ladder's features (benchmarks/RESULTS.md section 11): logreg reaches
# its optimum without tuning (test accuracy 0.92 / 0.98 on w2s-tiny-2 / -3); the linear head
# needs a rate well above fine-tuning's on standardised features (1e-3: 0.62 / 0.83 in 10
# epochs; 3e-2: 0.88 / 0.98).
HEAD_DEFAULTS: dict[str, dict[str, Any]] = {
    "linear": {"epochs": 10.0, "lr": 3e-2, "weight_decay": 0.0, "batch_size": None},
    "logreg": {"epochs": 100.0, "lr": 1.0, "weight_decay": 1e-4, "batch_size": None},
}
DEFAULT_HEAD = "logreg"  # the classic probe: EleutherAI's w2s fits its probes with L-BFGS


def check(probe: Any, where: str) -> list[str]:
    """Problems with a ``train.probe`` mapping, as ``field: message`` strings."""
    if not isinstance(probe, dict):
        return [f"{where}: must be a mapping ({', '.join(FIELDS)}), got {probe!r}"]
    problems = [
        f"{where}.{k}: unknown field (known: {', '.join(FIELDS)})" for k in probe if k not in FIELDS
    ]
    head = probe.get("head", DEFAULT_HEAD)
    if head not in HEADS:
        return [*problems, f"{where}.head: must be one of {', '.join(HEADS)}, got {head!r}"]
    cfg = {**HEAD_DEFAULTS[head], **probe}
    for name in ("epochs", "lr"):
        v = cfg[name]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            problems.append(f"{where}.{name}: must be a number > 0, got {v!r}")
    wd = cfg["weight_decay"]
    if not isinstance(wd, (int, float)) or isinstance(wd, bool) or wd < 0:
        problems.append(f"{where}.weight_decay: must be a number >= 0, got {wd!r}")
    bs = cfg["batch_size"]
    if bs is not None and (not isinstance(bs, int) or isinstance(bs, bool) or bs < 1):
        problems.append(f"{where}.batch_size: must be a whole number >= 1 or null, got {bs!r}")
    if head == "logreg" and bs is not None:
        problems.append(f"{where}.batch_size: logreg fits full-batch (L-BFGS); leave it out")
    return problems


def resolved(probe: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """``probe`` with its head's defaults merged, numbers as floats and the linear head's
    ``batch_size`` null replaced by the run's ``batch_size``: what a run key hashes."""
    head = probe.get("head", DEFAULT_HEAD)
    out = {"head": head, **HEAD_DEFAULTS[head], **probe}
    for name in ("epochs", "lr", "weight_decay"):
        out[name] = float(out[name])
    if head == "linear" and out["batch_size"] is None:
        out["batch_size"] = int(batch_size)
    return out


def load_features(store: Store, key: str) -> dict[str, np.ndarray]:
    """The arrays of features run ``key`` (w2sray/train/features.py FEATURE_ARRAYS)."""
    with np.load(io.BytesIO(store.read_bytes(key, FEATURES))) as npz:
        return {name: npz[name] for name in npz.files}


def _standardise(train: np.ndarray) -> Callable[[np.ndarray], torch.Tensor]:
    mean = train.mean(axis=0, dtype=np.float64)
    std = train.std(axis=0, dtype=np.float64)
    std = np.where(std > 1e-6, std, 1.0)  # a constant feature: centred, not blown up
    mean_t, std_t = torch.from_numpy(mean).float(), torch.from_numpy(std).float()

    def apply(x: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(np.asarray(x, dtype=np.float32)) - mean_t) / std_t

    return apply


def new_head(dim: int, seed: int) -> torch.nn.Linear:
    """The 2-way head, initialised as the fine-tuning classifier's (w2sray/models/head.py)."""
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(dim, 2)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.02)
        head.bias.zero_()
    return head


@torch.no_grad()
def head_p1(head: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Class-1 probabilities of the head on (standardised) features ``x``."""
    return torch.softmax(head(x).float(), dim=-1)[:, 1].numpy()


def head_steps(probe: ProbeSettings, n: int) -> tuple[int, int]:
    """(optimizer steps, steps per epoch) of a head on ``n`` training rows: logreg takes
    ``epochs`` full-batch L-BFGS iterations, linear ``epochs`` passes of ``batch_size`` rows."""
    if probe.head == "logreg":
        return max(1, int(round(probe.epochs))), 1
    per_epoch = max(1, n // probe.batch_size)
    return max(1, int(round(probe.epochs * per_epoch))), per_epoch


def fit_head(
    x: torch.Tensor,
    targets: torch.Tensor,
    probe: ProbeSettings,
    loss: str,
    loss_params: dict[str, Any],
    seed: int,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
) -> tuple[torch.nn.Linear, list[float], int]:
    """Train a head on features ``x`` [N, H] with soft ``targets`` [N, 2] and the run's loss.
    Returns (head, per-step losses, steps per epoch); ``on_step(step_done, head)`` runs after
    every step (model selection)."""
    from w2sray.losses import compute_loss
    from w2sray.train.steps import _lr_lambda, _order

    torch.manual_seed(seed)
    head = new_head(x.shape[1], seed)
    losses: list[float] = []
    n, bs = x.shape[0], probe.batch_size
    total, steps_per_epoch = head_steps(probe, n)
    if probe.head == "logreg":
        opt = torch.optim.LBFGS(
            head.parameters(), lr=probe.lr, max_iter=1, history_size=20,
            line_search_fn="strong_wolfe",
        )  # fmt: skip
        for it in range(total):

            def closure(frac: float = it / total) -> torch.Tensor:
                opt.zero_grad()
                value = compute_loss(loss, head(x), targets, frac, loss_params)
                value = value + 0.5 * probe.weight_decay * head.weight.pow(2).sum()
                value.backward()
                return value

            losses.append(float(opt.step(closure).detach()))
            if on_step is not None:
                on_step(it + 1, head)
        return head, losses, steps_per_epoch
    order = torch.from_numpy(_order(seed, n, total * bs))
    opt = torch.optim.AdamW(head.parameters(), lr=probe.lr, weight_decay=probe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, 0.0))
    for step in range(total):
        idx = order[step * bs : (step + 1) * bs]
        value = compute_loss(loss, head(x[idx]), targets[idx], step / total, loss_params)
        opt.zero_grad()
        value.backward()
        opt.step()
        sched.step()
        losses.append(float(value.detach()))
        if on_step is not None:
            on_step(step + 1, head)
    return head, losses, steps_per_epoch


def targets_of(run: dict[str, Any], feats: dict[str, np.ndarray], store: Store) -> np.ndarray:
    """Soft training targets [N, 2]: split A's ground truth for a GT run, the upstream run's
    predictions on split B for a transfer (checked against split B's ids like any run's)."""
    if run["kind"] == "gt":
        y = feats["gt_labels"].astype(np.float32)
        return np.stack([1 - y, y], axis=1)
    if run["kind"] != "transfer":
        raise ValueError(f"a probe trains gt and transfer runs, not {run['kind']!r} runs")
    p1 = load_weak_p1(run, feats["weak_ids"], store)  # the fine-tuning loop's check
    return np.stack([1 - p1, p1], axis=1)


# Below this many feature values (rows x dim) a head trains on one thread: on tensors this
# small, intra-op threads only contend (on a busy 2-core machine a 3,000 x 96 head trained 20x
# slower on 2 threads than on 1).
ONE_THREAD_BELOW = 1 << 24


def fit_probe(run: dict[str, Any], store: Store) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Train the probe of ``run`` (a Run.to_config() with ``train.probe``) from its features
    run's stored arrays; return the run's files (the fine-tuning loop's artifacts) and metrics.
    No backbone is built: the features are all it reads."""
    t_start = time.time()
    feats = load_features(store, run["features"])
    threads = torch.get_num_threads()
    if feats["gt"].size < ONE_THREAD_BELOW:
        torch.set_num_threads(1)
    try:
        return _fit_probe(run, store, feats, t_start)
    finally:  # a pack's next run (perhaps fine-tuning) gets the worker's threads back
        torch.set_num_threads(threads)


def _fit_probe(
    run: dict[str, Any], store: Store, feats: dict[str, np.ndarray], t_start: float
) -> tuple[dict[str, bytes], dict[str, Any]]:
    from w2sray.metrics import accuracy, roc_auc
    from w2sray.train.select import Selector, holdout, score

    probe = ProbeSettings.from_dict(run["train"]["probe"])
    select = run["train"].get("select")  # a probe run's train: probe, max_length, dtype, select
    x_train = feats["gt" if run["kind"] == "gt" else "weak"]
    targets = targets_of(run, feats, store)
    rows = np.arange(len(x_train))
    if select:  # hold out training rows to select on, as the fine-tuning loop does
        split_seed = DataRef.from_dict(run["dataset"]).split_seed
        rows, val_rows = holdout(len(rows), select["val_frac"], split_seed)
    standard = _standardise(x_train[rows])
    x = standard(x_train[rows])
    t = torch.from_numpy(targets[rows])
    selector, on_step = None, None
    if select:  # scored on the held-out rows against the labels it trains on (select.py)
        x_val, t_val = standard(x_train[val_rows]), targets[val_rows]
        current: list[torch.nn.Module] = []

        def evaluate() -> float:
            return score(select["metric"], t_val, head_p1(current[0], x_val))

        total, _ = head_steps(probe, len(rows))
        selector = Selector(select["metric"], select["every"], total, evaluate)

        def on_step(step: int, head: torch.nn.Module) -> None:
            current[:] = [head]
            selector.on_step(step, head)

    t_train = time.time()
    cpu_train = time.process_time()
    head, losses, steps_per_epoch = fit_head(
        x, t, probe, run["loss"], run["loss_params"], run["seed"], on_step
    )
    if selector is not None:
        selector.restore(head)
    train_seconds = time.time() - t_train
    train_cpu_seconds = time.process_time() - cpu_train

    t_eval = time.time()
    test_p1 = head_p1(head, standard(feats["test"]))
    weak_p1 = head_p1(head, standard(feats["weak"]))  # split B: weak labels / a chain's next
    test_y = feats["test_labels"]
    eval_seconds = time.time() - t_eval
    n_head = sum(p.numel() for p in head.parameters())
    metrics: dict[str, Any] = {
        "acc": accuracy(test_y, test_p1),
        "auc": roc_auc(test_y, test_p1),
        "weak_label_acc": accuracy(feats["weak_labels"], weak_p1),
        "train_loss": float(np.mean(losses[-max(1, steps_per_epoch) :])),
        "steps": len(losses),
        "probe": probe.head,
        "features_key": run["features"],
        "feature_dim": int(x_train.shape[1]),
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "eval_seconds": eval_seconds,
        "setup_seconds": t_train - t_start,  # reading the features and targets
        "t_loop_start": t_start,
        "t_train_start": t_train,
        "t_train_end": t_train + train_seconds,
        "t_eval_end": t_eval + eval_seconds,
        "examples": int(len(rows)),
        "n_test": int(len(test_y)),
        "params": n_head,  # a probe run holds the head only: the backbone is never built
        "trainable_params": n_head,
        "torch_threads": torch.get_num_threads(),
        "worker_nice": os.getpriority(os.PRIO_PROCESS, 0),
        "workers": 1,
        "gpu": False,
    }
    if selector is not None:
        metrics.update(selector.metrics())
        metrics["select_val_rows"] = int(len(val_rows))
    files = record_files(run, metrics)
    files[TEST_PREDICTIONS] = parquet_bytes(
        pd.DataFrame({"id": feats["test_ids"], "label": test_y, "p1": test_p1})
    )
    files[WEAK_LABELS] = parquet_bytes(pd.DataFrame({"id": feats["weak_ids"], "p1": weak_p1}))
    return files, metrics


def probe_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point of a probe run: ``config`` = {"run": Run.to_config(), "store":
    uri}. Probe runs get one worker (w2sray/runs.py); with more, every rank trains the same
    head (deterministic) and rank 0 writes."""
    import psutil
    import ray.train

    from w2sray.train.worker import report

    process_start = psutil.Process().create_time()
    run, store = config["run"], Store(config["store"])
    files, metrics = fit_probe(run, store)
    metrics["t_process_start"] = process_start
    if ray.train.get_context().get_world_rank() == 0:
        files.update(record_files(run, metrics))
        store.write_run(run["key"], files)
    report(run, metrics)
