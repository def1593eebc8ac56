"""Runs: immutable, content-keyed training jobs, and the plan (stages) a spec expands to.

A run's key hashes everything that determines its result (kind, data, model source, loss and
its hyper-parameters, training settings, seed, upstream keys, RESULT_VERSION) and nothing that
does not (display names, resources), so one weak model is trained once however many students
and methods use it, and renaming a model in the spec reuses its results.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from w2sray.spec import SweepSpec, canonical_json

# Bump when a change to the training code changes what a run produces.
RESULT_VERSION = 1

GT_METHOD = "ground_truth"


@dataclass(frozen=True)
class Run:
    kind: str  # "gt": train on split A with ground truth; "transfer": split B, weak labels
    dataset: dict[str, Any]
    model: dict[str, Any]  # name, source, revision, pooling, trust_remote_code
    loss: str
    loss_params: dict[str, Any]
    train: dict[str, Any]
    seed: int
    upstream: tuple[str, ...] = ()  # transfer: the weak model's GT run
    # Not part of the key:
    method: str = GT_METHOD
    weak_model: str | None = None
    ceiling_key: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)

    def content(self) -> dict[str, Any]:
        model = {k: v for k, v in self.model.items() if k != "name"}
        dataset = self.dataset
        if "sha256" in dataset:  # a local file: keyed by its bytes, not where it lies
            params = {k: v for k, v in dataset["params"].items() if k != "path"}
            dataset = {**dataset, "params": params}
        return {
            "version": RESULT_VERSION,
            "kind": self.kind,
            "dataset": dataset,
            "model": model,
            "loss": self.loss,
            "loss_params": self.loss_params,
            "train": self.train,
            "seed": self.seed,
            "upstream": list(self.upstream),
        }

    @property
    def key(self) -> str:
        digest = hashlib.sha256(canonical_json(self.content()).encode()).hexdigest()
        return f"{self.kind}-{digest[:20]}"

    @property
    def variant(self) -> str:
        """Display label of the method and its hyper-parameters."""
        if not self.loss_params:
            return self.method
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.loss_params.items()))
        return f"{self.method}({inner})"

    def describe(self) -> dict[str, Any]:
        """The manifest row: what the report needs to place this run."""
        return {
            "key": self.key,
            "kind": self.kind,
            "dataset": self.dataset["name"],
            "model": self.model["name"],
            "weak": self.weak_model,
            "method": self.method,
            "loss": self.loss,
            "hparams": canonical_json(self.loss_params),
            "variant": self.variant,
            "seed": self.seed,
            "weak_key": self.upstream[0] if self.upstream else None,
            "ceiling_key": self.ceiling_key,
        }

    def to_config(self) -> dict[str, Any]:
        """Everything a worker needs to train this run (written as config.json)."""
        return {**asdict(self), "key": self.key, "content": self.content()}


def _dataset_dict(ds: Any) -> dict[str, Any]:
    """The dataset as a run carries it. A local file's path is made absolute (Ray workers run
    in other directories) and its sha256 recorded, so the key follows the data's content:
    moving the file keeps results, editing it retrains."""
    d = asdict(ds)
    path = d["params"].get("path")
    if ds.name == "local" and isinstance(path, str) and os.path.isfile(path):
        d["params"] = {**d["params"], "path": os.path.abspath(path)}
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        d["sha256"] = digest.hexdigest()
    return d


def _model_dict(m: Any) -> dict[str, Any]:
    return {
        "name": m.name,
        "source": m.source,
        "revision": m.revision,
        "pooling": m.pooling,
        "trust_remote_code": m.trust_remote_code,
    }


@dataclass(frozen=True)
class Plan:
    """The runs of a sweep by stage: stage 0 trains every model on ground truth, stage 1 every
    weak -> strong transfer (which needs its weak model's GT run)."""

    gt: tuple[Run, ...]
    transfer: tuple[Run, ...]

    @property
    def stages(self) -> list[tuple[str, tuple[Run, ...]]]:
        return [("gt", self.gt), ("transfer", self.transfer)]

    def all_runs(self) -> list[Run]:
        return [*self.gt, *self.transfer]


def plan_sweep(spec: SweepSpec) -> Plan:
    """Expand a spec into content-keyed runs (deduplicated by key)."""
    gt: dict[tuple[str, str, int], Run] = {}
    transfers: dict[str, Run] = {}
    for ds in spec.datasets:
        ds_dict = _dataset_dict(ds)
        for seed in spec.seeds:
            for m in spec.models:
                gt[(ds.name, m.name, seed)] = Run(
                    kind="gt",
                    dataset=ds_dict,
                    model=_model_dict(m),
                    loss="xent",
                    loss_params={},
                    train=asdict(spec.train_for(m)),
                    seed=seed,
                    resources=asdict(spec.resources_for(m)),
                )
            for i, weak in enumerate(spec.models):
                for strong in spec.models[i + 1 :]:
                    for method in spec.methods:
                        for params in method.variants():
                            run = Run(
                                kind="transfer",
                                dataset=ds_dict,
                                model=_model_dict(strong),
                                loss=method.loss,
                                loss_params=params,
                                train=asdict(spec.train_for(strong)),
                                seed=seed,
                                upstream=(gt[(ds.name, weak.name, seed)].key,),
                                method=method.name,
                                weak_model=weak.name,
                                ceiling_key=gt[(ds.name, strong.name, seed)].key,
                                resources=asdict(spec.resources_for(strong)),
                            )
                            transfers.setdefault(run.key, run)
    unique_gt = {r.key: r for r in gt.values()}
    return Plan(gt=tuple(unique_gt.values()), transfer=tuple(transfers.values()))


def manifest(spec: SweepSpec, plan: Plan) -> dict[str, Any]:
    """The sweep manifest stored beside the runs: ladder order and every run's place."""
    return {
        "name": spec.name,
        "spec_path": spec.source_path,
        "ladder": [m.name for m in spec.models],
        "datasets": [d.name for d in spec.datasets],
        "runs": [r.describe() for r in plan.all_runs()],
    }
