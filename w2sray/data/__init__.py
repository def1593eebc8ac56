"""Dataset registry: a dataset is one entry, a loader returning texts and binary labels.

Splits are made here too, so every model of a sweep sees exactly the same examples.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from w2sray.data.latent import DEFAULTS as LATENT_DEFAULTS
from w2sray.data.latent import FACET_DEFAULTS, latent_param_problems, latent_rows
from w2sray.data.synthetic import synthetic_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    # load(n, seed, **params) -> (texts, labels); n is the number of examples the splits need
    load: Callable[..., tuple[list[str], list[int]]]
    doc: str
    params: tuple[str, ...]  # loader keyword arguments a spec may set
    # validate(params) -> problems (required or malformed params); None: names are checked only
    validate: Callable[[dict], list[str]] | None = None
    # Defaults of params the loader's signature does not show (it takes **params); see
    # resolved_dataset_params, which hashes them into run keys.
    defaults: dict[str, Any] | None = None
    # Bump when a code change alters results of this entry: only its runs' keys change.
    version: int = 1
    # load_sources(n_train, n_test, seed, **params) -> SourcedExamples, or None when the params
    # name no test source of its own (then make_splits cuts all three splits from ``load``)
    load_sources: Callable[..., SourcedExamples | None] | None = None
    # (module, pip extra) pairs the loader imports: see missing_requirements
    requires: tuple[tuple[str, str], ...] = ()
    source: str = "embedded"  # where rows come from, for `w2sray datasets`
    splits: str = "A, B and test cut from one draw"  # where each split comes from, likewise


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str,
    doc: str,
    params: tuple[str, ...] = (),
    validate: Callable[[dict], list[str]] | None = None,
    defaults: dict[str, Any] | None = None,
    version: int = 1,
    load_sources: Callable[..., SourcedExamples | None] | None = None,
    requires: tuple[tuple[str, str], ...] = (),
    source: str = "embedded",
    splits: str = "A, B and test cut from one draw",
) -> Callable:
    """Decorator adding a loader ``fn(n, seed, **params) -> (texts, labels)`` to DATASETS;
    ``validate(params)`` returns problems for spec validation (e.g. a required param missing).
    ``defaults`` declares the defaults of params the loader takes through ``**params`` (those
    of its named keyword arguments are read from its signature); ``version`` is hashed into the
    key of every run on the dataset: bump it when a code change alters the loader's results.
    ``load_sources`` gives training and test rows from separate sources (see make_splits);
    ``requires`` names the optional packages the loader imports and the extra installing them."""

    def wrap(fn: Callable) -> Callable:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = DatasetEntry(
            name,
            fn,
            doc,
            params,
            validate,
            defaults,
            version,
            load_sources,
            requires,
            source,
            splits,
        )
        return fn

    return wrap


def signature_defaults(fn: Callable, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The keyword defaults of ``fn``'s signature (those in ``names``, if given)."""
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.default is not inspect.Parameter.empty and (names is None or p.name in names)
    }


def dataset_defaults(name: str) -> dict[str, Any]:
    """Every param of dataset ``name`` a spec may set that has a default: the loader's
    signature defaults, overridden by the entry's declared ``defaults``."""
    entry = DATASETS[name]
    return {**signature_defaults(entry.load, entry.params), **(entry.defaults or {})}


def resolved_dataset_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The params dataset ``name`` loads with: its defaults, overridden by ``params``. What a
    run carries and hashes into its key, so changing a loader default changes the keys of the
    runs that rely on it; passing them to the loader is the same as leaving them out. An int
    given for a float default becomes a float (``p_very: 0`` is the default ``0.0``)."""
    defaults = dataset_defaults(name)
    out = dict(defaults)
    for k, v in params.items():
        d = defaults.get(k)
        floaty = isinstance(d, float) and isinstance(v, int) and not isinstance(v, bool)
        out[k] = float(v) if floaty else v
    return out


@register_dataset(
    "synthetic",
    "Embedded offline task: negation-sensitive synthetic reviews.",
    params=tuple(p for p in inspect.signature(synthetic_rows).parameters if p not in ("n", "seed")),
    defaults={k: v for k, v in signature_defaults(synthetic_rows).items() if k != "seed"},
)
def _synthetic(n: int, seed: int, **params: object) -> tuple[list[str], list[int]]:
    return synthetic_rows(n, seed=seed, **params)


@register_dataset(
    "latent",
    "Embedded offline task with latent knowledge: documents about hidden topics, labelled by "
    "a fixed split of the topics; unlabeled text teaches a pretrained LM the topics "
    "(w2sray/data/latent.py). Pretrain the ladder on another seed of it.",
    params=(*LATENT_DEFAULTS, *FACET_DEFAULTS),
    validate=lambda params: latent_param_problems(**params),  # names: validate_dataset_params
    defaults={**LATENT_DEFAULTS, **FACET_DEFAULTS},
)
def _latent(n: int, seed: int, **params: object) -> tuple[list[str], list[int]]:
    return latent_rows(n, seed=seed, **params)


def validate_dataset_params(name: str, params: dict) -> list[str]:
    """Problems with a dataset's loader params (unknown names, then the entry's own checks)."""
    entry = DATASETS[name]
    accepted = entry.params
    problems = [
        f"unknown parameter {k!r} for dataset {name!r} (accepted: {', '.join(accepted)})"
        for k in params
        if k not in accepted
    ]
    if entry.validate is not None:
        problems += entry.validate(params)
    return problems


def missing_packages(name: str) -> list[tuple[str, str]]:
    """The (module, pip extra) pairs dataset ``name`` needs that are not installed (found
    without importing them)."""
    return [
        (m, extra) for m, extra in DATASETS[name].requires if importlib.util.find_spec(m) is None
    ]


def missing_requirements(name: str) -> list[str]:
    """One message per optional package dataset ``name`` needs that is not installed, naming
    the dataset and the pip extra that installs it."""
    return [
        f"dataset {name!r} needs the `{module}` package, which is not installed: "
        f"pip install 'w2sray[{extra}]'"
        for module, extra in missing_packages(name)
    ]


@dataclass(frozen=True)
class Splits:
    """Three disjoint splits; ``*_ids`` index the loaded rows so disjointness is checkable."""

    gt_texts: list[str]
    gt_labels: list[int]
    gt_ids: np.ndarray
    weak_texts: list[str]
    weak_labels: list[int]
    weak_ids: np.ndarray
    test_texts: list[str]
    test_labels: list[int]
    test_ids: np.ndarray


@dataclass(frozen=True)
class SourcedExamples:
    """Training rows (for splits A and B) and test rows from separate sources."""

    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]
    dropped: int  # training rows left out because they are also test rows
    source: str = ""  # the training source, for error messages


def shared_with_test(train_keys: Iterable[str], test_keys: Iterable[str]) -> list[int]:
    """Indices of the training rows whose key, stripped, is also a test row's: the rows a
    loader with a separate test source drops from training, so no test example is trained
    on (the test source stays whole: it is the benchmark's)."""
    in_test = {k.strip() for k in test_keys}
    return [i for i, k in enumerate(train_keys) if k.strip() in in_test]


def log_dropped(source: str, dropped: int, test_source: str) -> None:
    if dropped:
        log.warning(
            "%s: %d training row(s) dropped: their text is also in the test rows (%s)",
            source,
            dropped,
            test_source,
        )


def splits_from_sources(
    name: str, src: SourcedExamples, n_gt: int, n_weak: int, n_test: int, split_seed: int
) -> Splits:
    """A and B cut from the training rows as make_splits cuts one source, test from the test
    rows. Test ids count on from the training rows' (``n_gt + n_weak + i``), so ids stay
    unique across the three splits."""
    need = n_gt + n_weak
    if len(src.train_texts) < need:
        raise ValueError(
            f"dataset {name!r} ({src.source}) has {len(src.train_texts)} training "
            f"examples (after dropping {src.dropped} also in the test rows), splits A and B "
            f"need {need} (n_gt={n_gt}, n_weak={n_weak})"
        )
    if len(src.test_texts) != n_test:  # a loader bug, not a user error
        raise AssertionError(f"{name}: {len(src.test_texts)} test rows, n_test is {n_test}")
    order = np.random.default_rng(split_seed).permutation(len(src.train_texts))
    a, b = order[:n_gt], order[n_gt:need]
    t = np.arange(need, need + n_test)

    def take(idx: np.ndarray) -> tuple[list[str], list[int]]:
        return [src.train_texts[i] for i in idx], [int(src.train_labels[i]) for i in idx]

    (a_t, a_y), (b_t, b_y) = take(a), take(b)
    return Splits(a_t, a_y, a, b_t, b_y, b, list(src.test_texts), list(src.test_labels), t)


def loader_params(d: Any) -> dict[str, Any]:
    """The loader arguments of a run's dataset or corpus (settings.DataRef / CorpusRef): its
    params, with ``revision`` set to the commit the plan resolved for a hub dataset
    (``commit``), so every worker reads the rows the run key names."""
    return {**d.params, "revision": d.commit} if d.commit else d.params


def run_splits(d: Any) -> Splits:
    """The splits of a run's dataset (a settings.DataRef)."""
    return make_splits(d.name, loader_params(d), d.n_gt, d.n_weak, d.n_test, d.split_seed)


def make_splits(
    name: str, params: dict, n_gt: int, n_weak: int, n_test: int, split_seed: int
) -> Splits:
    """Load a dataset and cut disjoint A (gt), B (weak) and test splits, deterministic in seed.

    An entry with a test source of its own (a hub task's ``test_split``, a local
    ``test_path``) gives A and B from its training rows and test from the test rows; any
    other cuts all three from one shuffled load."""
    entry = DATASETS[name]
    if entry.load_sources is not None:
        src = entry.load_sources(n_gt + n_weak, n_test, split_seed, **params)
        if src is not None:
            return splits_from_sources(name, src, n_gt, n_weak, n_test, split_seed)
    need = n_gt + n_weak + n_test
    texts, labels = entry.load(need, split_seed, **params)
    if len(texts) < need:
        raise ValueError(
            f"dataset {name!r} has {len(texts)} examples, the splits need {need} "
            f"(n_gt={n_gt}, n_weak={n_weak}, n_test={n_test})"
        )
    order = np.random.default_rng(split_seed).permutation(len(texts))
    ids = (order[:n_gt], order[n_gt : n_gt + n_weak], order[n_gt + n_weak : need])

    def take(idx: np.ndarray) -> tuple[list[str], list[int]]:
        return [texts[i] for i in idx], [int(labels[i]) for i in idx]

    (a_t, a_y), (b_t, b_y), (t_t, t_y) = (take(i) for i in ids)
    return Splits(a_t, a_y, ids[0], b_t, b_y, ids[1], t_t, t_y, ids[2])


# Entries defined in their own modules register themselves on import (after register_dataset
# exists, hence at the bottom).
from w2sray.data import hub, local  # noqa: E402, F401
