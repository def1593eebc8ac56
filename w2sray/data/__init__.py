"""Dataset registry: a dataset is one entry, a loader returning texts and binary labels.

Splits are made here too, so every model of a sweep sees exactly the same examples.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from w2sray.data.latent import DEFAULTS as LATENT_DEFAULTS
from w2sray.data.latent import latent_param_problems, latent_rows
from w2sray.data.synthetic import synthetic_rows


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


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str,
    doc: str,
    params: tuple[str, ...] = (),
    validate: Callable[[dict], list[str]] | None = None,
    defaults: dict[str, Any] | None = None,
    version: int = 1,
) -> Callable:
    """Decorator adding a loader ``fn(n, seed, **params) -> (texts, labels)`` to DATASETS;
    ``validate(params)`` returns problems for spec validation (e.g. a required param missing).
    ``defaults`` declares the defaults of params the loader takes through ``**params`` (those
    of its named keyword arguments are read from its signature); ``version`` is hashed into the
    key of every run on the dataset: bump it when a code change alters the loader's results."""

    def wrap(fn: Callable) -> Callable:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = DatasetEntry(name, fn, doc, params, validate, defaults, version)
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
    params=tuple(LATENT_DEFAULTS),
    validate=lambda params: latent_param_problems(**params),  # names: validate_dataset_params
    defaults=dict(LATENT_DEFAULTS),
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


def make_splits(
    name: str, params: dict, n_gt: int, n_weak: int, n_test: int, split_seed: int
) -> Splits:
    """Load a dataset and cut disjoint A (gt), B (weak) and test splits, deterministic in seed."""
    if name == "local" and params.get("test_path"):  # test rows from files of their own
        return local.splits_with_test_source(params, n_gt, n_weak, n_test, split_seed)
    need = n_gt + n_weak + n_test
    texts, labels = DATASETS[name].load(need, split_seed, **params)
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
