"""Hyper-parameter searches (a method's ``search:``): an Optuna TPE search per weak -> strong
pair, each trial trained on split B less a held-out part and scored there, the best setting then
trained on all of split B like any transfer run.

Here: the spec section, its checks and ranges, and the plan's entries (``Search``: its trial
and final runs, keyed with PART_VERSIONS["search"]; ``planned``, ``plan_path``). Beside it:
search_trial.py, what a trial trains on and is scored by; search_tune.py, the Tune searcher that
multiplexes the searches' trials and the stage that runs them after the sweep's other runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from w2sray.runs import Run

METRICS = ("weak_val", "gt_val")  # what a trial is scored on: never test


@dataclass(frozen=True)
class SearchSpec:
    """An Optuna TPE search per weak -> strong pair over the method's hyper-parameters.

    Trials train on split B minus a held-out validation part and are scored there: against the
    weak labels (``weak_val``, the honest default: no ground truth in model selection) or the
    ground truth (``gt_val``, marked in every table). Never on the test split. The best setting
    is then trained on the whole of split B and evaluated on test like any other run.
    """

    space: dict[str, Any] = field(default_factory=dict)  # param -> [low, high] or {low, high, log}
    num_samples: int = 8  # trials per pair
    max_concurrent: int = 2  # trials in flight at once (TPE learns from finished ones)
    seed: int = 0  # the TPE sampler's seed
    metric: str = "weak_val"  # weak_val | gt_val
    val_frac: float = 0.2  # share of split B held out for validation


def check(chk: Any, raw: Any, method: Any, where: str) -> SearchSpec | None:
    """A method's ``search`` mapping as a SearchSpec (None when absent or unusable); problems go
    to ``chk`` (spec._Checker) under ``where``."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        chk.bad(where, f"must be a mapping, got {raw!r}")
        return None
    search = chk.dataclass_from(SearchSpec, raw, where)
    if search is not None:
        _check(chk, search, method, where)
    return search


def check_part(chk: Any, method: Any, ctx: Any, where: str) -> Any:
    """The registry's check (w2sray/methods/__init__.py): the method's ``search`` parsed, and
    refused on probe students (a probe has no learning rate schedule to search)."""
    search = check(chk, method.search, method, f"{where}.search")
    probed = ctx.probe_students(method)
    if search is not None and probed:
        chk.bad(
            f"{where}.search",
            "searches are not supported on probes (train.probe set for students "
            f"{', '.join(probed)}): grid the loss params instead (a list in params), or "
            "probe: null for them",
        )
    return replace(method, search=search)


def _check(chk: Any, search: SearchSpec, method: Any, where: str) -> None:
    from w2sray.losses import LOSSES, validate_loss_params
    from w2sray.spec import _range

    if search.metric not in METRICS:
        msg = f"must be weak_val or gt_val (never test): got {search.metric!r}"
        chk.bad(f"{where}.metric", msg)
    _range(chk, f"{where}.num_samples", search.num_samples, 1)
    _range(chk, f"{where}.max_concurrent", search.max_concurrent, 1)
    if not 0 < search.val_frac < 0.9:
        chk.bad(f"{where}.val_frac", f"must be in (0, 0.9), got {search.val_frac!r}")
    if method.bootstrap or method.chains:
        chk.bad(where, "a search cannot be combined with bootstrap/chains in one method")
    if not search.space:
        chk.bad(f"{where}.space", "required: the hyper-parameters to search and their ranges")
    accepted = set(LOSSES[method.loss].defaults) | {"lr"}
    for key, rng in search.space.items():
        at = f"{where}.space.{key}"
        if key not in accepted:
            chk.bad(at, f"not a parameter of loss {method.loss!r} nor lr ({sorted(accepted)})")
            continue
        if isinstance(method.params.get(key), list):
            chk.bad(at, "also a grid axis in params: search it or grid it, not both")
        low, high, log = bounds(rng)
        if low is None:
            chk.bad(at, f"must be [low, high] or {{low, high, log}}, got {rng!r}")
            continue
        if not low < high:
            chk.bad(at, f"low must be below high, got [{low}, {high}]")
        if log and low <= 0:
            chk.bad(at, f"a log range needs low > 0, got {low}")
        if key != "lr":
            for bound in (low, high):
                for p in validate_loss_params(method.loss, {key: bound}):
                    chk.bad(at, p)
        elif low <= 0:
            chk.bad(at, f"lr must be > 0, got low {low}")


def _version() -> int:
    from w2sray.runs import PART_VERSIONS

    return PART_VERSIONS["search"]


@dataclass(frozen=True)
class Search:
    """An Optuna search for one (dataset, seed, weak -> strong pair, method): its trials are
    ``search`` runs built from ``base`` with sampled values; the best is trained as a transfer."""

    base: Run  # a transfer run with the method's fixed parameters
    space: dict[str, Any]  # param -> (low, high, log)
    num_samples: int
    max_concurrent: int
    seed: int
    metric: str  # weak_val | gt_val
    val_frac: float

    @property
    def key(self) -> str:
        content = {
            "search_version": _version(),
            "base": self.base.content(),
            "space": self.space,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "metric": self.metric,
            "val_frac": self.val_frac,
        }
        from w2sray.spec import canonical_json

        return "search-" + hashlib.sha256(canonical_json(content).encode()).hexdigest()[:20]

    @property
    def label(self) -> str:
        return f"{self.base.method}[search:{self.metric}]"

    def _with(self, values: dict[str, Any], **kw: Any) -> Run:
        params = {**self.base.loss_params, **{k: float(v) for k, v in values.items() if k != "lr"}}
        train = self.base.train
        if "lr" in values:
            train = replace(train, lr=float(values["lr"]))
        return replace(self.base, loss_params=params, train=train, **kw)

    def trial_run(self, values: dict[str, Any]) -> Run:
        """A trial: trains on split B minus the validation part, scored there, never on test."""
        return self._with(values, kind="search", val_frac=self.val_frac, depth=1)

    def final_run(self, best: dict[str, Any]) -> Run:
        """The best setting trained on the whole of split B and evaluated on test."""
        return self._with(best, label=self.label, depth=1, search_key=self.key)

    def describe(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "method": self.base.method,
            "metric": self.metric,
            "dataset": self.base.dataset.name,
            "weak": self.base.weak_model,
            "strong": self.base.model.name,
            "seed": self.base.seed,
            "num_samples": self.num_samples,
        }


def planned(base: Any, s: SearchSpec) -> Search:
    """The plan's Search of ``base``, the transfer run whose hyper-parameters the search sets."""
    space = {k: bounds(v) for k, v in sorted(s.space.items())}
    return Search(base, space, s.num_samples, s.max_concurrent, s.seed, s.metric, s.val_frac)


def plan_path(method: Any, runs: list[Any]) -> tuple[list[Any], list[Any]]:
    """The registry's plan hook: a searched method trains none of its path's runs now; the
    path's run (a pair: searches have no chains) is the base of a search whose selected run
    trains after its trials."""
    if method.search is None:
        return runs, []
    return [], [planned(runs[-1], method.search)]


def bounds(rng: Any) -> tuple[float | None, float | None, bool]:
    """(low, high, log) of a search range written as [low, high] or {low, high, log}."""
    from w2sray.spec import _coerce

    if isinstance(rng, list) and len(rng) == 2:
        low, high, log = rng[0], rng[1], False
    elif isinstance(rng, dict) and set(rng) <= {"low", "high", "log"}:
        low, high, log = rng.get("low"), rng.get("high"), bool(rng.get("log", False))
    else:
        return None, None, False
    low, high = _coerce(low, "float"), _coerce(high, "float")
    if not all(isinstance(v, float) for v in (low, high)):
        return None, None, False
    return low, high, log
