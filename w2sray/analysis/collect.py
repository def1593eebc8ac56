"""Read a store into the analysis tables: results (one row per transfer), GT runs, pretraining
runs, failures.

Reads only the store (sweep manifests plus run artifacts), never Tune's state, so sweeps that
were interrupted, resumed, or run from several clusters into one store add up.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from w2sray.artifacts import CONFIG, METRICS, SOFTWARE
from w2sray.data.corpus import FILE
from w2sray.metrics import ACC, AUC
from w2sray.provenance import describe
from w2sray.store import Store

PRETRAIN_COLUMNS = [
    "model", "objective", "corpus", "documents", "seed", "steps", "lm_loss_start", "lm_loss",
    "uniform_loss", "vocab_size", "tokens", "train_seconds", "run_key", "software",
]  # fmt: skip


@dataclass
class Tables:
    results: pd.DataFrame
    gt: pd.DataFrame
    failures: pd.DataFrame
    ladder: list[str]
    sweeps: list[str]
    # Every planned pretraining run; metric columns NaN until it has a result.
    pretrain: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PRETRAIN_COLUMNS))


def _pretrain_row(store: Store, key: str, row: dict, metrics: dict | None) -> dict[str, Any]:
    corpus = row["dataset"]
    if corpus == FILE and metrics is not None:
        # A file corpus is keyed by its bytes; its path is only in the run's config.
        path = store.read_json(key, CONFIG)["dataset"]["params"]["path"]
        corpus = f"{FILE}: {os.path.basename(path)}"
    m = metrics or {}
    vocab = m.get("vocab_size")
    return {
        "model": row["model"],
        "objective": m.get("objective", row.get("loss")),  # runs before the field: the loss
        "corpus": corpus,
        "documents": m.get("documents"),
        "seed": row.get("seed"),
        "steps": m.get("steps"),
        "lm_loss_start": m.get("lm_loss_start"),
        "lm_loss": m.get("lm_loss"),
        # A model predicting every token of the vocabulary alike has this loss (nats).
        "uniform_loss": math.log(vocab) if vocab else None,
        "vocab_size": vocab,
        "tokens": m.get("tokens"),
        "train_seconds": m.get("train_seconds"),
        "software": describe(m.get(SOFTWARE)),
        "run_key": key,
    }


def collect(store: Store) -> Tables:
    """Join every sweep manifest in the store with the metrics of its complete runs."""
    manifests = store.manifests()
    ladder: list[str] = []
    # One run may have several places: the same transfer can be a method's result and the
    # first step of another method's bootstrapping chain.
    placed: dict[tuple[str, str], dict] = {}
    for man in manifests:
        for name in man["ladder"]:
            if name not in ladder:
                ladder.append(name)
        for row in man["runs"]:
            placed.setdefault((row["key"], row.get("method", "")), row)
    searches = {s["key"] for man in manifests for s in man.get("searches", [])}
    rows: dict[str, dict] = {}
    for (key, _), row in placed.items():
        rows.setdefault(key, row)

    metrics: dict[str, dict] = {}
    for key in rows:
        if store.is_complete(key):
            metrics[key] = store.read_json(key, METRICS)

    gt_rows = [
        {
            "dataset": r["dataset"],
            "model": r["model"],
            "seed": r["seed"],
            "acc": metrics[k][ACC],
            "auc": metrics[k].get(AUC),
            "run_key": k,
            "software": describe(metrics[k].get(SOFTWARE)),
        }
        for k, r in rows.items()
        if r["kind"] == "gt" and k in metrics
    ]
    pretrain = [
        _pretrain_row(store, k, r, metrics.get(k))
        for k, r in rows.items()
        if r["kind"] == "pretrain"
    ]
    results = []
    for (k, _), r in placed.items():
        if r["kind"] != "transfer" or r.get("role") == "step" or k not in metrics:
            continue
        weak, ceil = metrics.get(r["weak_key"]), metrics.get(r["ceiling_key"])
        if weak is None or ceil is None:
            continue
        results.append(
            {
                "dataset": r["dataset"],
                "weak": r["weak"],
                "strong": r["model"],
                "method": r["method"],
                "loss": r.get("loss"),
                "hparams": r["hparams"],
                "variant": r["variant"],
                "seed": r["seed"],
                "generative": bool(r.get("generative", False)),
                "chain_length": int(r.get("depth", 1) or 1) + 1,  # models, weak included
                "weak_acc": weak[ACC],
                "ceiling_acc": ceil[ACC],
                "w2s_acc": metrics[k][ACC],
                "weak_auc": weak.get(AUC),
                "ceiling_auc": ceil.get(AUC),
                "w2s_auc": metrics[k].get(AUC),
                "run_key": k,
                "weak_key": r["weak_key"],
                "ceiling_key": r["ceiling_key"],
                "software": describe(metrics[k].get(SOFTWARE)),
            }
        )
    failures = [
        {
            "run_key": f.get("key"),
            "kind": f.get("kind"),
            "dataset": f.get("dataset"),
            "model": f.get("model"),
            "variant": f.get("variant"),
            "error": f.get("error"),
        }
        for f in store.failures()
        if (f.get("key") in rows and f.get("key") not in metrics)
        or (f.get("key") in searches and store.read_search(f["key"]) is None)
    ]
    return Tables(
        results=pd.DataFrame(results),
        gt=pd.DataFrame(gt_rows),
        failures=pd.DataFrame(failures),
        ladder=ladder,
        sweeps=[m["name"] for m in manifests],
        pretrain=pd.DataFrame(pretrain, columns=PRETRAIN_COLUMNS),
    )
