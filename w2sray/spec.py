"""Sweep spec: a YAML file validated into typed, frozen objects before any Ray work starts.

Every problem is collected (not just the first) and reported as ``file: field: message`` so a
user fixes the whole spec in one go. A list of values for a method hyper-parameter is a grid.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from w2sray.methods.generative import GenerativeSpec
from w2sray.methods.search import SearchSpec
from w2sray.settings import KeyedSettings


class SpecError(ValueError):
    """A spec that cannot run. ``problems`` are ``field: message`` strings."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


@dataclass(frozen=True)
class TrainSettings(KeyedSettings):
    """Optimisation settings of one run (any model entry may override them). As a fine-tuning
    run carries them (w2sray/runs.py), ``select`` and ``lora`` hold their resolved settings,
    ``probe`` is None, and ``as_dict`` (what the key hashes) leaves out the ones not set."""

    OPTIONAL = ("select", "lora", "probe")

    epochs: float = 2.0  # passes over the run's training split; fractional allowed
    batch_size: int = 32  # global batch, split evenly over the run's workers
    eval_batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_warmup_frac: float = 0.0  # linear lr warmup, then cosine decay to 0
    max_length: int = 64  # tokens; longer texts are truncated (and counted), never dropped
    grad_clip: float = 1.0
    # auto: bf16 on a GPU that supports it, fp32 otherwise; fp32; bf16 (on CPU too, but slow)
    dtype: str = "auto"
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory
    # Model selection on held-out training rows (w2sray/train/select.py): {metric:
    # weak_val_auc | weak_val_loss, every: steps, val_frac}; None: keep the last step.
    select: dict[str, Any] | None = None
    # LoRA adapters on the backbone through peft (w2sray/models/lora.py): {r, alpha, dropout,
    # target_modules: auto | [names]}; None: full fine-tuning. The head always trains in full.
    lora: dict[str, Any] | None = None
    # A linear probe on cached features (w2sray/train/probe.py): the backbone frozen, its pooled
    # features computed once by a ``features`` run, only a 2-way head trained: {head: linear |
    # logreg, epochs, lr, weight_decay, batch_size}; None: fine-tuning.
    probe: dict[str, Any] | None = None


DTYPES = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Resources:
    """How one run is laid out on the cluster. Does not change a run's key: the global batch is
    the same however many workers share it, so results agree up to float summation order. One
    exception: with ``train.dtype: auto`` a GPU (bf16 where supported) keys the run apart from
    CPU (fp32): w2sray/runs.py ``Run.gpu_precision``."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    # 0 (CPU), a fraction in (0, 1) (one-worker runs sharing a GPU, memory capped at the
    # share: w2sray/train/gpu_share.py) or a whole number of GPUs
    gpus_per_worker: float = 0.0
    zero_stage: int = 1  # DeepSpeed ZeRO stage 0-3
    offload: bool = False  # ZeRO-Offload of optimizer state to CPU (stage >= 1)
    max_failures: int = 0  # Ray Train restarts of a run from its last checkpoint (-1: forever)
    checkpoint_every: int = 0  # steps between checkpoints; 0: a quarter of the run if it may
    # be restarted (max_failures != 0), else none


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset and the sizes of its three disjoint splits."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)  # loader arguments (registry entry)
    n_gt: int = 1000  # split A: ground-truth training of every ladder model
    n_weak: int = 1000  # split B: weak labels, then weak-to-strong training
    n_test: int = 1000  # test split, the same examples for every model
    split_seed: int = 0


PRETRAIN_OBJECTIVES = ("clm", "mlm")


@dataclass(frozen=True)
class CorpusSpec:
    """The unlabeled texts a model pretrains on: a registered dataset's texts (its labels
    dropped), drawn with their own ``seed``, or a local file."""

    dataset: str | None = None  # a registered dataset (its loader's texts, labels dropped)
    params: dict[str, Any] = field(default_factory=dict)  # the loader's params
    n: int = 20000  # documents
    # The labelled splits draw with the sweep dataset's split_seed: a corpus of the same
    # dataset must use another seed, so that no test document is pretrained on.
    seed: int = 1
    path: str | None = None  # instead of dataset: .txt (a document per line), .jsonl/.csv/...
    text_column: str = "text"  # the column of a table ``path``


@dataclass(frozen=True)
class PretrainSpec:
    """Self-supervised pretraining of a ladder model before any labelled training: one
    content-keyed run per recipe (model x corpus x settings), trained once and reused by every
    ground-truth and transfer run of the model, in this sweep and any later one naming the same
    recipe. A built-in model starts from random weights and gets a word-level tokenizer over the
    corpus; a hub or local model continues from its weights with its own tokenizer: a causal
    LM with ``clm``, an encoder (BERT-like, with a mask token) with ``mlm``."""

    corpus: CorpusSpec
    objective: str = "clm"  # clm: next-token prediction; mlm: masked tokens (encoders)
    mask_prob: float = 0.15  # mlm: share of tokens masked (BERT's 80% [MASK] / 10% / 10%)
    steps: int = 1000  # optimizer steps of batch_size documents
    lr: float = 3e-3
    batch_size: int = 32
    max_length: int = 64  # tokens per document; longer ones are truncated
    warmup_frac: float = 0.05  # linear warmup, then cosine decay to 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0  # initialisation and data order


@dataclass(frozen=True)
class ModelSpec:
    """A ladder rung: a built-in tiny model, a hub name or a local path, optionally pretrained
    first (``pretrain``). A ladder can be one of sizes, of pretraining steps, or both: two
    entries may share a source and differ in their pretraining."""

    name: str
    source: str  # builtin name, HF hub id or local directory
    revision: str | None = None
    pooling: str = "auto"  # auto | last | first | mean
    trust_remote_code: bool = False
    train: dict[str, Any] = field(default_factory=dict)  # TrainSettings overrides
    resources: dict[str, Any] = field(default_factory=dict)  # Resources overrides
    pretrain: PretrainSpec | None = None  # written as a mapping in the spec


@dataclass(frozen=True)
class MethodSpec:
    """A weak-to-strong training method: a loss, its hyper-parameter grid, and optionally
    bootstrapping, generative fine-tuning or an Optuna search (see docs in README)."""

    name: str
    loss: str
    params: dict[str, Any] = field(default_factory=dict)  # scalar or list (= grid axis)
    # Restrict the method to these [weak, strong] pairs (default: every pair of the ladder).
    pairs: list[Any] = field(default_factory=list)
    # Bootstrapping: reach the strong model through every ladder model between it and the weak
    # one (weak -> m1 -> ... -> strong), each step trained on the previous step's labels.
    bootstrap: bool = False
    # Explicit chains instead, e.g. [[tiny-1, tiny-2, tiny-4]]: each is one bootstrapped pair.
    chains: list[Any] = field(default_factory=list)
    generative: GenerativeSpec | None = None
    search: SearchSpec | None = None

    def variants(self) -> list[dict[str, Any]]:
        """The grid of hyper-parameter settings this method expands to (sorted keys)."""
        keys = sorted(self.params)
        axes = [v if isinstance(v, list) else [v] for v in (self.params[k] for k in keys)]
        # Loss hyper-parameters are floats: alpha_max 1 and 1.0 are the same run.
        axes = [[_coerce(x, "float") for x in axis] for axis in axes]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes)]


@dataclass(frozen=True)
class SweepSpec:
    name: str
    storage: str
    datasets: tuple[DatasetSpec, ...]
    models: tuple[ModelSpec, ...]  # the ladder, weakest first
    methods: tuple[MethodSpec, ...]
    seeds: tuple[int, ...]
    train: TrainSettings = TrainSettings()
    resources: Resources = Resources()
    max_concurrent_trials: int | None = None  # None: derived from cluster resources
    # tracker -> options: mlflow, wandb (w2sray/tracking.py); never part of a run's key
    tracking: dict[str, Any] = field(default_factory=dict)
    # short runs trained one after another by one worker group (w2sray/packing.py):
    # {max_runs, max_cost, dataflow} with their defaults; max_runs 1: no packing; dataflow: the
    # sweep's stages as one experiment (w2sray/dataflow.py). Not part of run keys.
    packing: dict[str, Any] = field(default_factory=lambda: _packing_defaults())
    source_path: str = ""
    # The fields the spec's top-level ``train:`` writes (parse_spec fills it). The others take
    # each model's defaults-table values (w2sray/models/defaults.py). None, for a spec built in
    # code: every field of ``train`` counts as written, the table is not used.
    train_written: frozenset[str] | None = None

    def table_train(self, model: ModelSpec) -> dict[str, Any]:
        """The defaults table's training values that ``model`` takes: its source's entry, less
        what the top-level ``train:`` or the model's own ``train:`` writes."""
        if self.train_written is None:
            return {}
        return _table_train(model, self.train_written)

    def train_for(self, model: ModelSpec) -> TrainSettings:
        """TrainSettings defaults < defaults table < top-level ``train:`` < model ``train:``."""
        return replace(self.train, **self.table_train(model), **model.train)

    def resources_for(self, model: ModelSpec) -> Resources:
        """Resources defaults < top-level ``resources:`` < model ``resources:`` (the defaults
        table has no resources: see w2sray/models/defaults.py)."""
        return replace(self.resources, **model.resources)


def _table_train(model: ModelSpec, written: frozenset[str]) -> dict[str, Any]:
    from w2sray.models.defaults import spec_train_defaults

    table = spec_train_defaults(model.source)
    return {k: v for k, v in table.items() if k not in written and k not in model.train}


def canonical_json(obj: Any) -> str:
    """Stable JSON used for content keys and grouping (sorted keys, no whitespace)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_default)


def _default(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"not serialisable: {type(obj).__name__}")


# ---------------------------------------------------------------------------------------------
# Validation


class _Checker:
    """Collects problems while coercing raw YAML into dataclasses."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")

    def mapping(self, raw: Any, where: str) -> dict[str, Any] | None:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.bad(where, f"must be a mapping, got {type(raw).__name__}")
            return None
        return raw

    def dataclass_from(self, cls: type, raw: dict[str, Any], where: str, **fixed: Any) -> Any:
        """Build ``cls`` from ``raw``, checking unknown keys and field types."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = dict(fixed)
        for key, value in raw.items():
            if key not in known or key in fixed:
                self.bad(f"{where}.{key}", f"unknown field (known: {', '.join(sorted(known))})")
                continue
            value = _coerce(value, known[key].type)
            ok = self.check_type(value, known[key].type, f"{where}.{key}")
            if ok:
                kwargs[key] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            missing = [
                n for n, f in known.items() if n not in kwargs and _required(f) and n not in fixed
            ]
            for n in missing:
                self.bad(f"{where}.{n}", "required field is missing")
            if not missing:
                self.bad(where, str(exc))
            return None

    def check_type(self, value: Any, annotation: Any, where: str) -> bool:
        ann = str(annotation)
        if "None" in ann and value is None:
            return True
        want = ann.split(" ")[0].split("[")[0]
        checks = {
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "str": lambda v: isinstance(v, str),
            "bool": lambda v: isinstance(v, bool),
            "dict": lambda v: isinstance(v, dict),
            "list": lambda v: isinstance(v, list),
        }
        check = checks.get(want)
        if check is None or check(value):
            return True
        self.bad(where, f"must be {want}, got {value!r}")
        return False


def _coerce(value: Any, annotation: Any) -> Any:
    """Make float fields floats: YAML reads ``1e-3`` as a string and ``3`` as an int, and a run's
    content key must not change between ``epochs: 3`` and ``epochs: 3.0``."""
    if str(annotation).split(" ")[0] != "float" or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _required(f: Any) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


def _range(chk: _Checker, where: str, value: float, lo: float, hi: float | None = None) -> None:
    if value < lo or (hi is not None and value > hi):
        span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        chk.bad(where, f"must be {span}, got {value!r}")


def _check_train(chk: _Checker, t: TrainSettings, where: str) -> None:
    if t.epochs <= 0:
        chk.bad(f"{where}.epochs", f"must be > 0, got {t.epochs!r}")
    _range(chk, f"{where}.batch_size", t.batch_size, 1)
    _range(chk, f"{where}.eval_batch_size", t.eval_batch_size, 1)
    if t.lr <= 0:
        chk.bad(f"{where}.lr", f"must be > 0, got {t.lr!r}")
    _range(chk, f"{where}.weight_decay", t.weight_decay, 0)
    _range(chk, f"{where}.lr_warmup_frac", t.lr_warmup_frac, 0, 1)
    _range(chk, f"{where}.max_length", t.max_length, 2)
    if t.dtype not in DTYPES:
        chk.bad(f"{where}.dtype", f"must be auto, fp32 or bf16, got {t.dtype!r}")
    if t.select is not None:
        _check_select(chk, t.select, f"{where}.select")
    if t.lora is not None:
        from w2sray.models.lora import check as check_lora

        for problem in check_lora(t.lora, f"{where}.lora"):
            field_name, _, msg = problem.partition(": ")
            chk.bad(field_name, msg)
    if t.probe is not None:
        from w2sray.train.probe import check as check_probe

        for problem in check_probe(t.probe, f"{where}.probe"):
            field_name, _, msg = problem.partition(": ")
            chk.bad(field_name, msg)
        if t.lora is not None:
            chk.bad(
                f"{where}.probe",
                "a probe trains only a head on the frozen backbone's cached features, "
                "train.lora adapts the backbone: set one of them (probe: null or lora: null)",
            )


def _check_select(chk: _Checker, select: Any, where: str) -> None:
    from w2sray.train.select import DEFAULTS, METRICS

    if not isinstance(select, dict):
        chk.bad(where, f"must be a mapping ({', '.join(DEFAULTS)}), got {select!r}")
        return
    for key in set(select) - set(DEFAULTS):
        chk.bad(f"{where}.{key}", f"unknown field (known: {', '.join(DEFAULTS)})")
    sel = {**DEFAULTS, **select}
    if sel["metric"] not in METRICS:
        chk.bad(f"{where}.metric", f"must be one of {', '.join(METRICS)}, got {sel['metric']!r}")
    every = sel["every"]
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        chk.bad(f"{where}.every", f"must be a whole number of steps >= 1, got {every!r}")
    frac = sel["val_frac"]
    if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not 0 < frac <= 0.5:
        chk.bad(f"{where}.val_frac", f"must be in (0, 0.5], got {frac!r}")


def _check_resources(chk: _Checker, r: Resources, t: TrainSettings | None, where: str) -> None:
    _range(chk, f"{where}.workers", r.workers, 1)
    _range(chk, f"{where}.cpus_per_worker", r.cpus_per_worker, 0)
    _range(chk, f"{where}.gpus_per_worker", r.gpus_per_worker, 0)
    _check_gpu_share(chk, r, where)
    _range(chk, f"{where}.max_failures", r.max_failures, -1)
    _range(chk, f"{where}.checkpoint_every", r.checkpoint_every, 0)
    if r.zero_stage not in (0, 1, 2, 3):
        chk.bad(f"{where}.zero_stage", f"must be 0, 1, 2 or 3, got {r.zero_stage!r}")
    if r.offload and r.zero_stage == 0:
        chk.bad(f"{where}.offload", "needs zero_stage >= 1")
    if t is not None and r.workers >= 1 and t.batch_size % r.workers:
        chk.bad(
            f"{where}.workers",
            f"batch_size {t.batch_size} is not divisible by {r.workers} workers",
        )
    if t is not None and t.select is not None and r.max_failures != 0:
        chk.bad(
            f"{where}.max_failures",
            "train.select keeps its best state in memory, which a restarted run would lose: "
            "set max_failures 0 with train.select",
        )


# Ray counts resources in steps of 0.0001 (ray_constants.MIN_RESOURCE_GRANULARITY): a smaller
# GPU share would be reserved as no GPU at all.
MIN_GPU_FRACTION = 0.0001


def _check_gpu_share(chk: _Checker, r: Resources, where: str) -> None:
    """A worker gets part of one GPU (a fraction in (0, 1]) or whole GPUs: Ray never splits a
    worker over a part of a second GPU, so 1.5 is meaningless. Runs on a fraction have one
    worker: Ray may place two of a run's fractional workers on the same GPU, and NCCL refuses two
    ranks of one process group on one GPU ("Duplicate GPU detected"); fractions are for small
    models, which gain nothing from data parallelism over slices of one device."""
    g = r.gpus_per_worker
    if g <= 0:
        return
    at = f"{where}.gpus_per_worker"
    if g > 1 and not float(g).is_integer():
        chk.bad(at, f"must be a fraction in (0, 1] or a whole number of GPUs, got {g!r}")
    elif g < MIN_GPU_FRACTION:
        chk.bad(at, f"must be at least {MIN_GPU_FRACTION} (Ray's resource granularity), got {g!r}")
    elif g < 1 and r.workers > 1:
        chk.bad(
            at,
            f"a fraction of a GPU ({g!r}) needs workers: 1, got {r.workers}: Ray may put two "
            "workers of the run on one GPU, where NCCL refuses two ranks of one process group; "
            "use whole GPUs (gpus_per_worker: 1) for a multi-worker run",
        )


def load_spec(path: str | Path, storage_override: str | None = None) -> SweepSpec:
    """Read and validate a sweep spec; raise SpecError naming the file and every bad field."""
    path = str(path)
    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise SpecError(path, ["file not found"]) from None
    except yaml.YAMLError as exc:
        raise SpecError(path, [f"not valid YAML: {exc}"]) from None
    return parse_spec(raw, path, storage_override)


def parse_spec(raw: Any, path: str = "<spec>", storage_override: str | None = None) -> SweepSpec:
    """Validate an already-parsed YAML document (see load_spec): one function per section,
    each recording its problems (``field: message``) so that all of them are reported at once."""
    chk = _Checker()
    top = chk.mapping(raw, "(top level)")
    if top is None:
        raise SpecError(path, chk.problems)
    _check_known_fields(chk, top)
    name, storage = _parse_name_and_storage(chk, top, storage_override)
    train, train_written, resources = _parse_defaults(chk, top)
    datasets = _parse_datasets(chk, top)
    models, lora_models, probe_models = _parse_models(
        chk, top, datasets, train, train_written, resources
    )
    methods = _parse_methods(chk, top, [m.name for m in models], lora_models, probe_models)
    seeds = _parse_seeds(chk, top)
    mct, packing = _parse_run_options(chk, top)

    # Deduplicate the problems (a bad grid reports once, not once per grid point).
    problems = list(dict.fromkeys(chk.problems))
    if problems:
        raise SpecError(path, problems)
    return SweepSpec(
        name=name,
        storage=storage,
        datasets=tuple(datasets),
        models=tuple(models),
        methods=tuple(methods),
        seeds=tuple(seeds),
        train=train,
        resources=resources,
        max_concurrent_trials=mct,
        tracking=dict(top.get("tracking") or {}),
        packing=packing,
        source_path=path,
        train_written=train_written,
    )


TOP_FIELDS = frozenset(
    {
        "name",
        "storage",
        "datasets",
        "models",
        "methods",
        "seeds",
        "train",
        "resources",
        "max_concurrent_trials",
        "tracking",
        "packing",
        "description",
    }
)


def _check_known_fields(chk: _Checker, top: dict[str, Any]) -> None:
    for key in top:
        if key not in TOP_FIELDS:
            chk.bad(str(key), f"unknown field (known: {', '.join(sorted(TOP_FIELDS))})")


def _parse_name_and_storage(
    chk: _Checker, top: dict[str, Any], storage_override: str | None
) -> tuple[Any, Any]:
    name = top.get("name")
    if not isinstance(name, str) or not name.strip():
        chk.bad("name", "required: a non-empty string")
    elif not all(c.isalnum() or c in "-_." for c in name):
        chk.bad("name", f"may hold only letters, digits, '-', '_', '.': got {name!r}")
    storage = storage_override or top.get("storage")
    if not isinstance(storage, str) or not storage.strip():
        chk.bad("storage", "required: a local path or s3:// / gs:// URI (or pass --store)")
    return name, storage


def _parse_defaults(
    chk: _Checker, top: dict[str, Any]
) -> tuple[TrainSettings, frozenset[str], Resources]:
    """The sweep's ``train`` and ``resources`` (every model's, unless it overrides them), and
    which training fields the spec wrote (those win over a model family's defaults table)."""
    train_raw = chk.mapping(top.get("train"), "train")
    train = chk.dataclass_from(TrainSettings, train_raw or {}, "train") or TrainSettings()
    _check_train(chk, train, "train")
    train_written = frozenset(train_raw or ()) & {f.name for f in fields(TrainSettings)}
    res_raw = chk.mapping(top.get("resources"), "resources")
    resources = chk.dataclass_from(Resources, res_raw or {}, "resources") or Resources()
    _check_resources(chk, resources, train, "resources")
    return train, train_written, resources


def _parse_datasets(chk: _Checker, top: dict[str, Any]) -> list[DatasetSpec]:
    from w2sray.data import DATASETS, validate_dataset_params

    datasets = []
    raw_ds = top.get("datasets")
    if not isinstance(raw_ds, list) or not raw_ds:
        chk.bad("datasets", "required: a non-empty list")
        raw_ds = []
    for i, item in enumerate(raw_ds):
        where = f"datasets[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        m = chk.mapping(item, where)
        if m is None:
            continue
        ds = chk.dataclass_from(DatasetSpec, m, where)
        if ds is None:
            continue
        if ds.name not in DATASETS:
            chk.bad(f"{where}.name", f"unknown dataset {ds.name!r} (known: {', '.join(DATASETS)})")
        else:
            for p in validate_dataset_params(ds.name, ds.params):
                chk.bad(f"{where}.params", p)
        for n in ("n_gt", "n_weak", "n_test"):
            _range(chk, f"{where}.{n}", getattr(ds, n), 2)
        datasets.append(ds)
    _no_dupes(chk, "datasets", [d.name for d in datasets])
    return datasets


def _parse_models(
    chk: _Checker,
    top: dict[str, Any],
    datasets: list[DatasetSpec],
    train: TrainSettings,
    train_written: frozenset[str],
    resources: Resources,
) -> tuple[list[ModelSpec], list[str], list[str]]:
    """The ladder, and the names of its models trained with LoRA and as probes (some methods
    refuse them)."""
    from w2sray.models import resolve_model_source

    models = []
    lora_models = []  # models trained with LoRA (generative fine-tuning refuses them)
    probe_models = []  # models trained as probes (generative fine-tuning, searches refuse them)
    raw_models = top.get("models")
    if not isinstance(raw_models, list) or len(raw_models) < 2:
        chk.bad("models", "required: a list of at least 2 models (the ladder, weakest first)")
        raw_models = []
    for i, item in enumerate(raw_models):
        where = f"models[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        m = chk.mapping(item, where)
        if m is None:
            continue
        m = dict(m)
        if isinstance(m.get("name"), str) and "source" not in m:
            m["source"] = m["name"]
        model = chk.dataclass_from(ModelSpec, m, where)
        if model is None:
            continue
        problem = resolve_model_source(model.source, check_only=True)
        if problem:
            chk.bad(f"{where}.source", problem)
        if model.pooling not in ("auto", "last", "first", "mean"):
            chk.bad(f"{where}.pooling", f"must be auto, last, first or mean: got {model.pooling!r}")
        if model.pretrain is not None:
            pre = _check_pretrain(chk, model.pretrain, model, datasets, f"{where}.pretrain")
            model = replace(model, pretrain=pre)
        sub_t = chk.dataclass_from(TrainSettings, model.train, f"{where}.train")
        sub_r = chk.dataclass_from(Resources, model.resources, f"{where}.resources")
        if sub_t is not None and sub_r is not None:
            mt = replace(train, **_table_train(model, train_written), **model.train)
            _check_train(chk, mt, f"{where}.train")
            if mt.lora is not None:
                lora_models.append(model.name)
            if mt.probe is not None:
                probe_models.append(model.name)
            _check_resources(chk, replace(resources, **model.resources), mt, f"{where}.resources")
            workers = replace(resources, **model.resources).workers
            if model.pretrain is not None and workers >= 1 and model.pretrain.batch_size % workers:
                chk.bad(
                    f"{where}.pretrain.batch_size",
                    f"{model.pretrain.batch_size} is not divisible by {workers} workers",
                )
        models.append(model)
    _no_dupes(chk, "models", [m.name for m in models])
    return models, lora_models, probe_models


def _parse_methods(
    chk: _Checker,
    top: dict[str, Any],
    ladder: list[str],
    lora_models: list[str],
    probe_models: list[str],
) -> list[MethodSpec]:
    from w2sray.losses import LOSSES, validate_loss_params
    from w2sray.methods import MethodContext, check_method

    ctx = MethodContext(ladder, lora_models, probe_models)
    methods = []
    raw_methods = top.get("methods")
    if not isinstance(raw_methods, list) or not raw_methods:
        chk.bad("methods", "required: a non-empty list")
        raw_methods = []
    for i, item in enumerate(raw_methods):
        where = f"methods[{i}]"
        if isinstance(item, str):
            item = {"name": item, "loss": item}
        m = chk.mapping(item, where)
        if m is None:
            continue
        m = dict(m)
        if isinstance(m.get("name"), str) and "loss" not in m:
            m["loss"] = m["name"]
        method = chk.dataclass_from(MethodSpec, m, where)
        if method is None:
            continue
        if method.loss not in LOSSES:
            chk.bad(f"{where}.loss", f"unknown loss {method.loss!r} (known: {', '.join(LOSSES)})")
            methods.append(method)
            continue
        for key, value in method.params.items():
            if isinstance(value, list) and not value:
                chk.bad(f"{where}.params.{key}", "an empty list gives no grid points")
        for variant in method.variants():
            for p in validate_loss_params(method.loss, variant):
                chk.bad(f"{where}.params", p)
        method = check_method(chk, method, ctx, where)  # pairs, chains, generative, search
        methods.append(method)
    _no_dupes(chk, "methods", [m.name for m in methods])
    return methods


def _parse_seeds(chk: _Checker, top: dict[str, Any]) -> list[Any]:
    seeds = top.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        chk.bad("seeds", f"must be a non-empty list of integers, got {seeds!r}")
        seeds = []
    elif len(set(seeds)) != len(seeds):
        chk.bad("seeds", f"repeated seed in {seeds!r}")
    return seeds


def _parse_run_options(chk: _Checker, top: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``max_concurrent_trials``, ``packing`` and ``tracking``."""
    from w2sray.tracking import check_tracking

    mct = top.get("max_concurrent_trials")
    if mct is not None and (not isinstance(mct, int) or isinstance(mct, bool) or mct < 1):
        chk.bad("max_concurrent_trials", f"must be a positive integer or absent, got {mct!r}")

    packing = _check_packing(chk, top.get("packing"))
    for problem in check_tracking(top.get("tracking")):
        field_name, _, msg = problem.partition(": ")
        chk.bad(field_name, msg)
    return mct, packing


def _packing_defaults() -> dict[str, Any]:
    from w2sray.packing import DEFAULTS

    return dict(DEFAULTS)


def _check_packing(chk: _Checker, raw: Any) -> dict[str, Any]:
    """``packing: {max_runs, max_cost, dataflow}`` with the defaults merged."""
    out = _packing_defaults()
    if raw is None:
        return out
    if not isinstance(raw, dict):
        chk.bad("packing", f"must be a mapping (max_runs, max_cost, dataflow), got {raw!r}")
        return out
    for key, value in raw.items():
        if key == "max_cost" and isinstance(value, str):  # YAML 1.1 reads 1e11 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if key not in out:
            chk.bad(f"packing.{key}", "unknown field (known: max_runs, max_cost, dataflow)")
        elif key == "dataflow" and not isinstance(value, bool):
            chk.bad("packing.dataflow", f"must be true or false, got {value!r}")
        elif key == "max_runs" and (not isinstance(value, int) or isinstance(value, bool)):
            chk.bad("packing.max_runs", f"must be a whole number >= 1, got {value!r}")
        elif key == "max_runs" and value < 1:
            chk.bad("packing.max_runs", f"must be a whole number >= 1, got {value!r}")
        elif key == "max_cost" and (
            not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0
        ):
            chk.bad("packing.max_cost", f"must be a number > 0, got {value!r}")
        else:
            out[key] = value
    return out


def _check_pretrain(
    chk: _Checker, raw: Any, model: ModelSpec, datasets: list[DatasetSpec], where: str
) -> PretrainSpec | None:
    """Validate a model's ``pretrain`` mapping into a PretrainSpec (None when it is bad)."""
    from w2sray.data import DATASETS, validate_dataset_params
    from w2sray.models import is_builtin

    if not isinstance(raw, dict):
        chk.bad(where, f"must be a mapping (corpus, steps, lr, ...), got {raw!r}")
        return None
    raw = dict(raw)
    corpus_raw = chk.mapping(raw.pop("corpus", None), f"{where}.corpus")
    if corpus_raw is None:
        return None
    corpus = chk.dataclass_from(CorpusSpec, corpus_raw, f"{where}.corpus")
    pre = chk.dataclass_from(PretrainSpec, raw, where, corpus=corpus)
    if corpus is None or pre is None:
        return None
    at = f"{where}.corpus"
    if (corpus.dataset is None) == (corpus.path is None):
        chk.bad(at, "give one of dataset (a registered dataset's texts) or path (a local file)")
    elif corpus.dataset is not None:
        if corpus.dataset not in DATASETS:
            chk.bad(f"{at}.dataset", f"unknown dataset {corpus.dataset!r} ({', '.join(DATASETS)})")
        else:
            for p in validate_dataset_params(corpus.dataset, corpus.params):
                chk.bad(f"{at}.params", p)
        for ds in datasets:  # the splits' documents would be in the corpus
            if (
                ds.name == corpus.dataset
                and ds.split_seed == corpus.seed
                and ds.params == (corpus.params)
            ):
                chk.bad(
                    f"{at}.seed",
                    f"{corpus.seed} is the split_seed of dataset {ds.name!r}: the corpus would "
                    "hold its test documents; pick another seed",
                )
    elif not os.path.isfile(os.path.expanduser(corpus.path)):
        chk.bad(f"{at}.path", f"file {corpus.path!r} does not exist")
    _range(chk, f"{at}.n", corpus.n, 1)
    if pre.objective not in PRETRAIN_OBJECTIVES:
        chk.bad(
            f"{where}.objective",
            f"must be one of {', '.join(PRETRAIN_OBJECTIVES)}, got {pre.objective!r}",
        )
    _range(chk, f"{where}.steps", pre.steps, 1)
    _range(chk, f"{where}.batch_size", pre.batch_size, 1)
    _range(chk, f"{where}.max_length", pre.max_length, 2)
    _range(chk, f"{where}.warmup_frac", pre.warmup_frac, 0, 1)
    _range(chk, f"{where}.weight_decay", pre.weight_decay, 0)
    if pre.lr <= 0:
        chk.bad(f"{where}.lr", f"must be > 0, got {pre.lr!r}")
    if not 0 < pre.mask_prob < 1:
        chk.bad(f"{where}.mask_prob", f"must be in (0, 1), got {pre.mask_prob!r}")
    if is_builtin(model.source):
        if pre.objective == "mlm":
            chk.bad(
                f"{where}.objective",
                f"{model.source!r} is a built-in decoder: mlm needs an encoder; use clm",
            )
    else:  # a local folder's architecture is known now; a hub id's when it is loaded
        from w2sray.models.registry import ENCODER_TYPES

        cfg = os.path.join(os.path.expanduser(model.source), "config.json")
        if os.path.isfile(cfg):
            with open(cfg) as fh:
                kind = json.load(fh).get("model_type")
            if kind in ENCODER_TYPES and pre.objective == "clm":
                chk.bad(where, f"{model.source!r} is a {kind} encoder: clm needs a causal LM")
            if kind not in ENCODER_TYPES and pre.objective == "mlm":
                chk.bad(where, f"{model.source!r} is a {kind} model: mlm needs an encoder")
    return pre


def _no_dupes(chk: _Checker, where: str, names: list[str]) -> None:
    seen = set()
    for i, n in enumerate(names):
        if n in seen:
            chk.bad(f"{where}[{i}].name", f"duplicate name {n!r}")
        seen.add(n)
