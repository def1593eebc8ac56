"""Runs: immutable, content-keyed training jobs, and the plan (stages) a spec expands to.

A run's key hashes everything that determines its result and nothing that does not (display
names, resources), so one weak model is trained once however many students and methods use it,
and renaming a model in the spec reuses its results. What it hashes is the *resolved* setting,
defaults included, so changing a default in code changes exactly the keys that rely on it:

- the dataset's loader params with the loader's defaults merged (resolved_dataset_params), the
  split sizes and seed; a local file by its sha256, not its path; a hub dataset by the commit
  its revision points at (w2sray/data/hub.py with_hub_commit), like a hub model;
- the model's source, revision, pooling, trust_remote_code (a built-in's architecture too); a
  local model folder by the digest of its weight and config files (w2sray/digests.py), not its
  path;
- the loss and its params with the loss's defaults merged (resolved_loss_params), the training
  settings (already complete), the seed, the upstream run's key;
- versions: RESULT_VERSION (the whole training loop), PART_VERSIONS[kind] (and "generative"
  or "probe" when used), and the loss's and dataset's registry ``version``;
- the device class when it decides the precision (``dtype: auto`` on a GPU: bf16 there, fp32
  on CPU); resources otherwise never change a key.

A probe run (``train.probe``) is a gt or transfer run that also hashes its ``features`` run's
key; its ``train`` holds only what a probe uses (the probe settings, ``max_length`` and
``dtype`` through its features, ``select``), so fine-tuning settings do not retrain it. A
features run hashes the model and dataset content, ``max_length``, ``dtype`` and
``eval_batch_size``, never a seed, method or loss: one per model and dataset, reused by all.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from w2sray.methods import generative, method_paths, plan_path, run_fields

# Searches are the search part's (w2sray/methods/search.py); the name stays importable here
# because Tune experiments stored before it moved pickled it as w2sray.runs.Search.
from w2sray.methods.search import Search  # noqa: F401
from w2sray.settings import (
    CorpusRef,
    DataRef,
    FeatureSettings,
    ModelRef,
    PretrainSettings,
    ProbeSettings,
    ProbeTrain,
)
from w2sray.spec import Resources, SweepSpec, TrainSettings, canonical_json

# Bump when a change to the training code changes what a run produces.
RESULT_VERSION = 2  # 2: every non-search run also writes its split-B predictions

# Per run kind and method feature: bump when a code change alters results of this entry (only
# runs of that kind, or using that feature, get new keys). Losses and datasets carry their own
# ``version`` in their registries (register_loss, register_dataset). A kind not listed is 1.
PART_VERSIONS: dict[str, int] = {
    "gt": 1,
    "transfer": 1,
    "search": 1,
    "generative": generative.VERSION,
    "pretrain": 1,
    "features": 1,  # the features run (w2sray/train/features.py)
    "probe": 1,  # probe gt / transfer runs (w2sray/train/probe.py)
}

GT_METHOD = "ground_truth"


@dataclass(frozen=True)
class Run:
    # "pretrain": self-supervised, on a corpus; "features": a model's pooled features of a
    # dataset (for probes); "gt": split A, ground truth; "transfer": split B, weak labels;
    # "search": a search trial
    kind: str
    dataset: DataRef | CorpusRef  # a pretraining run: its corpus
    model: ModelRef  # with the pretraining run it starts from, if any
    loss: str
    loss_params: dict[str, Any]
    # fine-tuning (gt, transfer, search): TrainSettings; a probe run: ProbeTrain; "pretrain":
    # PretrainSettings; "features": FeatureSettings (w2sray/settings.py)
    train: TrainSettings | ProbeTrain | PretrainSettings | FeatureSettings
    seed: int
    upstream: tuple[str, ...] = ()  # the run whose split-B predictions are the training labels
    generative: dict[str, Any] = field(default_factory=dict)  # LM fine-tuning first (if set)
    val_frac: float = 0.0  # search trials: share of split B held out for validation
    features: str | None = None  # a probe run: the features run whose arrays it trains on
    # Not part of the key:
    method: str = GT_METHOD
    weak_model: str | None = None
    weak_key: str | None = None  # the weak model's GT run (a chain's first rung); default upstream
    ceiling_key: str | None = None
    depth: int = 0  # stage: 0 GT, 1 direct transfer, k: the k-th step of a bootstrapping chain
    label: str | None = None  # display label overriding ``variant`` (searched methods)
    search_key: str | None = None  # the search that selected this run's hyper-parameters
    resources: Resources = field(default_factory=Resources)

    @property
    def probe(self) -> ProbeSettings | None:
        """A probe run's probe (``train.probe``), None for any other run."""
        return self.train.probe if isinstance(self.train, ProbeTrain) else None

    def content(self) -> dict[str, Any]:
        from w2sray.data import DATASETS
        from w2sray.losses import LOSSES, resolved_loss_params

        model = {k: v for k, v in self.model.as_dict().items() if k != "name"}
        if "sha256" in model:  # a local model folder: keyed by its files, not where it lies
            model = {k: v for k, v in model.items() if k != "source"}
        if "commit" in model:  # a hub model: keyed by its commit, however the spec named it
            model = {k: v for k, v in model.items() if k != "revision"}
        dataset = self.dataset.as_dict()
        if "sha256" in dataset:  # a local file: keyed by its bytes, not where it lies
            params = {k: v for k, v in dataset["params"].items() if k not in ("path", "test_path")}
            dataset = {**dataset, "params": params}
        if "commit" in dataset:  # a hub dataset: keyed by its commit, however the spec named it
            params = {k: v for k, v in dataset["params"].items() if k != "revision"}
            dataset = {**dataset, "params": params}
        loss = LOSSES.get(self.loss)
        entry = DATASETS.get(dataset.get("name", ""))
        versions = {
            "kind": PART_VERSIONS.get(self.kind, 1),
            "loss": loss.version if loss else 1,
            "dataset": entry.version if entry else 1,
        }
        if self.generative:
            versions["generative"] = PART_VERSIONS["generative"]
        if self.probe is not None:
            versions["probe"] = PART_VERSIONS["probe"]
        content = {
            "version": RESULT_VERSION,
            "versions": versions,
            "kind": self.kind,
            "dataset": dataset,
            "model": model,
            "loss": self.loss,
            # Defaults merged: a changed default changes the key, a written default does not.
            "loss_params": resolved_loss_params(self.loss, self.loss_params)
            if loss
            else self.loss_params,
            "train": self.train.as_dict(),
            "seed": self.seed,
            "upstream": list(self.upstream),
        }
        # Only when used, so adding these features left every other run's key as it was.
        if self.generative:
            content["generative"] = self.generative
        if self.val_frac:
            content["val_frac"] = self.val_frac
        if self.features:
            content["features"] = self.features
        if self.gpu_precision:
            content["device"] = "gpu"
        return content

    @property
    def gpu_precision(self) -> bool:
        """Whether the device decides this run's precision: ``dtype: auto`` (pretraining always)
        trains in bf16 on a GPU that has it and in fp32 on CPU, so a GPU run is keyed apart
        from the CPU run of the same settings. Only then: how many GPUs, or which share of one,
        never changes a key, and CPU runs keep the keys they had before this was keyed."""
        on_gpu = self.resources.gpus_per_worker > 0
        return on_gpu and getattr(self.train, "dtype", "auto") == "auto"

    @property
    def needs(self) -> tuple[str, ...]:
        """The runs whose results this run reads: its upstream, its pretraining run, and a
        probe's features run (which itself needs the pretraining run)."""
        if self.features:
            return (*self.upstream, self.features)
        pre = self.model.pretrain
        return (*self.upstream, pre) if pre else self.upstream

    @property
    def key(self) -> str:
        digest = hashlib.sha256(canonical_json(self.content()).encode()).hexdigest()
        return f"{self.kind}-{digest[:20]}"

    @property
    def variant(self) -> str:
        """Display label of the method and its hyper-parameters."""
        if self.label:
            return self.label
        if not self.loss_params:
            return self.method
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.loss_params.items()))
        return f"{self.method}({inner})"

    def describe(self, role: str = "result") -> dict[str, Any]:
        """The manifest row: what the report needs to place this run. ``role`` is "result" for
        a run the report shows, "step" for a bootstrapping chain's intermediate run."""
        return {
            "key": self.key,
            "kind": self.kind,
            "role": role,
            "dataset": self.dataset.name,
            "model": self.model.name,
            "weak": self.weak_model,
            "method": self.method,
            "loss": self.loss,
            "hparams": canonical_json({**self.loss_params, **self._searched_lr()}),
            "variant": self.variant,
            "seed": self.seed,
            "generative": bool(self.generative),
            "depth": self.depth,
            "weak_key": self.weak_key or (self.upstream[0] if self.upstream else None),
            "ceiling_key": self.ceiling_key,
            **({"probe": self.probe.head} if self.probe is not None else {}),
        }

    def _searched_lr(self) -> dict[str, Any]:
        return {"lr": self.train.lr} if self.search_key else {}

    def to_config(self) -> dict[str, Any]:
        """Everything a worker needs to train this run (written as config.json): the loss
        params resolved as the key hashed them (the spec's as written stay in ``variant``)."""
        content = self.content()
        typed = {
            "model": self.model.as_dict(),
            "dataset": self.dataset.as_dict(),
            "train": self.train.as_dict(),
            "resources": asdict(self.resources),
            "loss_params": content["loss_params"],
        }
        return {**asdict(self), **typed, "key": self.key, "content": content}


def dataset_ref(ds: Any) -> DataRef:
    """The dataset as a run carries it, its loader params resolved (defaults merged). A local
    file's path is made absolute (Ray workers run in other directories) and its sha256 recorded,
    so the key follows the data's content: moving the file keeps results, editing it retrains."""
    from w2sray.data import resolved_dataset_params
    from w2sray.data.hub import with_hub_commit
    from w2sray.data.local import with_test_digests
    from w2sray.digests import file_digest

    d = asdict(ds)
    d["params"] = resolved_dataset_params(ds.name, d["params"])
    d = with_hub_commit(d)  # a hub dataset: the commit its revision points at
    path = d["params"].get("path")
    if ds.name == "local" and isinstance(path, str) and os.path.isfile(path):
        d["params"] = {**d["params"], "path": os.path.abspath(path)}
        d["sha256"] = file_digest(path)
        d = with_test_digests(d)  # test_path's files too (absolute, keyed by their sha256s)
    return DataRef.from_dict(d)


def model_ref(m: Any, pretrain_key: str | None = None) -> ModelRef:
    """The model of spec entry ``m`` as its runs carry it (w2sray/settings.py ModelRef). A
    built-in records its architecture (so editing the built-in ladder changes keys); a local
    folder its absolute path (for the workers) and the digest of its files, which the key
    hashes instead of the path; a hub id the commit its revision points at.
    ``pretrain_key``: the pretraining run whose weights the model starts from (keyed too)."""
    from w2sray.digests import folder_digest
    from w2sray.models.registry import BUILTIN_LADDER

    ref = ModelRef(m.name, m.source, m.revision, m.trust_remote_code, m.pooling)
    local = os.path.expanduser(m.source)
    if m.source in BUILTIN_LADDER:
        ref = replace(ref, builtin=dict(BUILTIN_LADDER[m.source]))
    elif os.path.isdir(local):
        ref = replace(ref, source=os.path.abspath(local), sha256=folder_digest(local))
    else:  # a hub id: keyed by the commit its revision points at (models/revisions.py)
        from w2sray.models.revisions import resolve_revision

        ref = replace(ref, commit=resolve_revision(m.source, m.revision).commit)
    return replace(ref, pretrain=pretrain_key or None)


def train_settings(t: TrainSettings, source: str | None = None) -> TrainSettings | ProbeTrain:
    """A run's training settings as its key hashes them: ``select``, ``lora`` and ``probe``
    with their defaults merged, each left out of the key when off (so keys from before they
    existed stay the same). ``lora.target_modules: auto`` becomes the family's list where
    ``source`` (the model's) tells the family (w2sray/models/lora.py family_targets). A probe
    run keeps only the fields a probe uses (ProbeTrain): the fine-tuning settings do not touch
    it."""
    from w2sray.models.lora import family_targets
    from w2sray.models.lora import resolved as resolved_lora
    from w2sray.train.probe import resolved as resolved_probe
    from w2sray.train.select import DEFAULTS

    select = {**DEFAULTS, **t.select} if t.select is not None else None
    if t.probe is not None:
        probe = ProbeSettings.from_dict(resolved_probe(t.probe, t.batch_size))
        return ProbeTrain(probe, t.max_length, t.dtype, select)
    lora = None
    if t.lora is not None:
        lora = resolved_lora(t.lora, family_targets(source) if source else None)
    return replace(t, select=select, lora=lora)


def features_run(model: ModelRef, dataset: DataRef, t: TrainSettings, resources: Resources) -> Run:
    """The features run of a model (``model_ref``) on a dataset (``dataset_ref``) under
    training settings ``t`` (TrainSettings): keyed by their content, ``max_length``, ``dtype``
    and ``eval_batch_size`` only. Seed 0: a built-in model without pretraining is a random
    backbone, the same one for every probe of every seed."""
    return Run(
        kind="features",
        dataset=dataset,
        model=model,
        loss="features",
        loss_params={},
        train=FeatureSettings(t.max_length, t.dtype, t.eval_batch_size),
        seed=0,
        method="features",
        label=f"features(pooling={model.pooling},max_length={t.max_length})",
        resources=resources,
    )


def probe_resources(resources: Resources) -> Resources:
    """A probe run's layout: one CPU worker (a head on cached features needs no GPU, no data
    parallelism and no checkpoints: a failed probe reruns in seconds), the model's CPUs."""
    return replace(
        resources,
        workers=1,
        gpus_per_worker=0.0,
        zero_stage=0,
        offload=False,
        max_failures=0,
        checkpoint_every=0,
    )


def _pretrain_run(m: Any, resources: Resources) -> Run:
    """The pretraining run of model spec ``m`` (which has a ``pretrain`` recipe)."""
    from w2sray.data.corpus import corpus_dict

    pre = m.pretrain
    model = replace(model_ref(m), pooling=None)  # no classifier head: no pooling
    # the objective is the run's loss; mask_prob its parameter (clm has none)
    settings = PretrainSettings.of(pre)
    return Run(
        kind="pretrain",
        dataset=CorpusRef.from_dict(corpus_dict(pre.corpus)),
        model=model,
        loss=pre.objective,
        loss_params={"mask_prob": pre.mask_prob} if pre.objective == "mlm" else {},
        train=settings,
        seed=pre.seed,
        method="pretrain",
        resources=resources,
    )


@dataclass(frozen=True)
class Plan:
    """The runs of a sweep. ``gt`` trains every model on ground truth; ``transfer`` holds every
    weak-label run: direct transfers (depth 1) and bootstrapping steps (depth k needs k-1).
    ``searches`` add their trials and selected runs while the sweep executes. ``rows`` place the
    runs in the report (None: one row per run)."""

    gt: tuple[Run, ...]
    transfer: tuple[Run, ...]
    searches: tuple[Any, ...] = ()  # w2sray/methods/search.py Search
    rows: tuple[dict[str, Any], ...] | None = None
    pretrain: tuple[Run, ...] = ()  # self-supervised pretraining, before everything else
    features: tuple[Run, ...] = ()  # probes' cached features, after pretraining, before gt

    @property
    def stages(self) -> list[tuple[str, tuple[Run, ...]]]:
        out: list[tuple[str, tuple[Run, ...]]] = (
            [("pretrain", self.pretrain)] if self.pretrain else []
        )
        if self.features:
            out.append(("features", self.features))
        out.append(("gt", self.gt))
        for depth in sorted({max(1, r.depth) for r in self.transfer}):
            runs = tuple(r for r in self.transfer if max(1, r.depth) == depth)
            out.append(("transfer" if depth == 1 else f"chain-{depth}", runs))
        return out

    def all_runs(self) -> list[Run]:
        return [*self.pretrain, *self.features, *self.gt, *self.transfer]

    def manifest_rows(self) -> list[dict[str, Any]]:
        if self.rows is None:
            return [r.describe() for r in self.all_runs()]
        return list(self.rows)


class _Planner:
    """Accumulates a sweep's runs, deduplicated by key, and their report rows."""

    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self.models = {m.name: m for m in spec.models}
        self.ladder = [m.name for m in spec.models]
        self.gt: dict[tuple[str, str, int], Run] = {}
        self.transfers: dict[str, Run] = {}
        self.searches: dict[str, Search] = {}
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.steps: dict[str, Run] = {}  # bootstrapping chains' intermediate runs
        self.features: dict[str, Run] = {}
        self.pretrain = {
            m.name: _pretrain_run(m, spec.resources_for(m)) for m in spec.models if m.pretrain
        }
        for run in self.pretrain.values():  # in the manifest: the report lists a failed one's
            self.rows.setdefault((run.key, run.method), run.describe())
        self.model_refs = {
            m.name: model_ref(m, self.pretrain[m.name].key if m.name in self.pretrain else None)
            for m in spec.models
        }

    def settings(self, m: Any, ds_ref: DataRef) -> dict[str, Any]:
        """A gt / transfer run's train, resources and (a probe's) features run key."""
        t, res = self.spec.train_for(m), self.spec.resources_for(m)
        out = {"train": train_settings(t, m.source), "resources": res}
        if t.probe is not None:  # one features run per (model, dataset, max_length, dtype)
            feat = features_run(self.model_refs[m.name], ds_ref, t, res)
            self.features.setdefault(feat.key, feat)
            self.rows.setdefault((feat.key, feat.method), feat.describe())
            out.update(features=feat.key, resources=probe_resources(res))
        return out

    def add_gt(self, ds: Any, ds_ref: DataRef, seed: int) -> None:
        for m in self.spec.models:
            run = Run(
                kind="gt",
                dataset=ds_ref,
                model=self.model_refs[m.name],
                loss="xent",
                loss_params={},
                seed=seed,
                **self.settings(m, ds_ref),
            )
            self.gt[(ds.name, m.name, seed)] = run
            self.rows.setdefault((run.key, GT_METHOD), run.describe())

    def add_method(self, ds: Any, ds_ref: DataRef, seed: int, method: Any) -> None:
        """A method's runs on every ladder path it trains and grid point, as the method parts
        shape them (w2sray/methods): a transfer per path step, or (a searched method) one
        search per path."""
        for path in method_paths(method, self.ladder):
            for params in method.variants():
                runs = self.path_runs(ds, ds_ref, seed, method, path, params)
                train, searches = plan_path(method, runs)
                for run in train:
                    self.transfers.setdefault(run.key, run)
                    if run.depth < len(path) - 1:  # a rung on the way to the path's student
                        self.steps.setdefault(run.key, run)
                    else:
                        self.rows.setdefault((run.key, method.name), run.describe())
                for found in searches:
                    self.searches.setdefault(found.key, found)

    def path_runs(
        self,
        ds: Any,
        ds_ref: DataRef,
        seed: int,
        method: Any,
        path: list[str],
        params: dict[str, Any],
    ) -> list[Run]:
        """The transfer runs along ``path`` (weak, [rungs], strong), each trained on the
        previous one's labels."""
        weak, strong = path[0], path[-1]
        weak_key = self.gt[(ds.name, weak, seed)].key
        fields = run_fields(method)
        runs: list[Run] = []
        prev = weak_key
        for depth, name in enumerate(path[1:], start=1):
            run = Run(
                kind="transfer",
                dataset=ds_ref,
                model=self.model_refs[name],
                loss=method.loss,
                loss_params=params,
                seed=seed,
                upstream=(prev,),
                method=method.name,
                weak_model=weak if name == strong else path[depth - 1],
                weak_key=weak_key if name == strong else None,
                ceiling_key=self.gt[(ds.name, name, seed)].key,
                depth=depth,
                **fields,
                **self.settings(self.models[name], ds_ref),
            )
            prev = run.key
            runs.append(run)
        return runs

    def plan(self) -> Plan:
        placed = {key for key, _ in self.rows}
        for key, run in self.steps.items():
            if key not in placed:  # an intermediate rung no method reports as its own result
                self.rows[(key, run.method)] = run.describe(role="step")
        return Plan(
            pretrain=tuple({r.key: r for r in self.pretrain.values()}.values()),
            features=tuple(self.features.values()),
            gt=tuple({r.key: r for r in self.gt.values()}.values()),
            transfer=tuple(self.transfers.values()),
            searches=tuple(self.searches.values()),
            rows=tuple(self.rows.values()),
        )


def plan_sweep(spec: SweepSpec) -> Plan:
    """Expand a spec into content-keyed runs (deduplicated by key) and their report rows."""
    planner = _Planner(spec)
    for ds in spec.datasets:
        ds_ref = dataset_ref(ds)
        for seed in spec.seeds:
            planner.add_gt(ds, ds_ref, seed)
            for method in spec.methods:
                planner.add_method(ds, ds_ref, seed, method)
    return planner.plan()


def manifest(spec: SweepSpec, plan: Plan, selected: list[Run] | None = None) -> dict[str, Any]:
    """The sweep manifest stored beside the runs: ladder order, every run's place in the
    report, the searches and (once they ran) the runs they selected."""
    rows = plan.manifest_rows() + [r.describe() for r in selected or []]
    return {
        "name": spec.name,
        "spec_path": spec.source_path,
        "ladder": [m.name for m in spec.models],
        "datasets": [d.name for d in spec.datasets],
        "runs": rows,
        "searches": [s.describe() for s in plan.searches],
    }


def unpinned_sources(plan: Plan) -> list[str]:
    """One line per hub model or hub dataset whose revision could not be resolved to a commit
    (hub unreachable, not in the local cache): its runs are keyed by name and revision, so new
    weights or rows pushed to that revision would reuse their results."""
    from w2sray.data.hub import HUB_TASKS

    seen: dict[str, str] = {}
    for run in plan.all_runs():
        m, d = run.model, run.dataset
        if not (m.builtin or m.sha256 or m.commit or m.name in seen):
            seen[m.name] = (
                f"model {m.name} ({m.source}, revision {m.revision or 'main'}): "
                "not resolved to a commit (hub unreachable, not in the local cache); its runs "
                "are keyed by name and revision: pin `revision:` to a commit to key them by "
                "their weights"
            )
        if d.name in HUB_TASKS and not d.commit and f"dataset {d.name}" not in seen:
            hub_id, revision = d.params.get("hub_id"), d.params.get("revision")
            seen[f"dataset {d.name}"] = (
                f"dataset {d.name} ({hub_id}, revision {revision or 'main'}): not resolved "
                "to a commit (hub unreachable, not in the local cache); its runs are keyed by "
                "name and revision: pin `revision:` to a commit to key them by their rows"
            )
    return list(seen.values())
