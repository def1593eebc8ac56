"""Read a store into the analysis tables: results (one row per transfer), GT runs, failures.

Reads only the store (sweep manifests plus run artifacts), never Tune's state, so sweeps that
were interrupted, resumed, or run from several clusters into one store add up.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from w2sray.store import Store


@dataclass
class Tables:
    results: pd.DataFrame
    gt: pd.DataFrame
    failures: pd.DataFrame
    ladder: list[str]
    sweeps: list[str]


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
            metrics[key] = store.read_json(key, "metrics.json")

    gt_rows = [
        {
            "dataset": r["dataset"],
            "model": r["model"],
            "seed": r["seed"],
            "acc": metrics[k]["acc"],
            "auc": metrics[k].get("auc"),
            "run_key": k,
        }
        for k, r in rows.items()
        if r["kind"] == "gt" and k in metrics
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
                "weak_acc": weak["acc"],
                "ceiling_acc": ceil["acc"],
                "w2s_acc": metrics[k]["acc"],
                "weak_auc": weak.get("auc"),
                "ceiling_auc": ceil.get("auc"),
                "w2s_auc": metrics[k].get("auc"),
                "run_key": k,
                "weak_key": r["weak_key"],
                "ceiling_key": r["ceiling_key"],
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
    )
