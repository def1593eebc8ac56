"""Weak-to-strong methods beyond a loss, one module each, registered in ``METHOD_PARTS`` as
losses are in w2sray/losses.py. A method in a spec is a loss (its hyper-parameter grid) plus any
of these parts; each part's module owns its spec fields and their validation (including what it
cannot be combined with), what it adds to a run (and so to the run key, with its version), its
phase in the worker loop, and the report's comparisons it asks for:

- bootstrap.py (``paths``): which ladder paths a method trains (pairs, bootstrapping chains);
- generative.py: generative fine-tuning (the student's LM objective on split B's texts first),
  what it adds to a transfer run, and the report's comparison of a variant with and without it;
- search.py: Optuna searches' spec section, checks and plan entries (``Search``);
  search_trial.py: what a trial trains on and is scored by; search_tune.py: the Tune searcher
  that multiplexes the searches' trials and the stage that runs them (``search_and_select``,
  called by w2sray/sweep.py after the other runs).

Adding a part is one module and one entry below: ``check`` validates the part's fields of a
method (problems to the spec checker) and returns the method with them parsed;
``report_pairs`` (optional) names (without, with) variant pairs the report compares. The plan
(w2sray/runs.py) expands a method only through the hooks here: ``paths`` (one part owns them:
the ladder paths a method trains), ``run_fields`` (what a part adds to each transfer run it
shapes, hashed into the run key) and ``plan_path`` (what becomes of a path's runs: trained as
they are, or, for a search, the base of a search that trains its selected run later).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MethodContext:
    """What a part's checks may need to know about the rest of the spec."""

    ladder: list[str]  # model names, weakest first
    lora_models: list[str]  # models trained with train.lora
    probe_models: list[str]  # models trained with train.probe

    def probe_students(self, method: Any) -> list[str]:
        """The probe models that ``method`` trains on weak labels."""
        try:
            students = {n for path in method_paths(method, self.ladder) for n in path[1:]}
        except ValueError:  # a bad pair or chain: reported by the paths part's check
            return []
        return [m for m in self.probe_models if m in students]


@dataclass(frozen=True)
class MethodPart:
    """One way a method goes beyond its loss (see the module docstring)."""

    name: str
    fields: tuple[str, ...]  # the MethodSpec fields it owns
    check: Callable[[Any, Any, MethodContext, str], Any]  # (checker, method, ctx, where)
    report_pairs: Callable[[Any], list[tuple[str, str]]] | None = None
    # plan hooks (w2sray/runs.py), each optional:
    paths: Callable[[Any, list[str]], list[list[str]]] | None = None  # (method, ladder)
    run_fields: Callable[[Any], dict[str, Any]] | None = None  # (method) -> Run fields
    # (method, the path's transfer runs) -> (runs to train now, searches to run)
    plan_path: Callable[[Any, list[Any]], tuple[list[Any], list[Any]]] | None = None


def _parts() -> dict[str, MethodPart]:
    from w2sray.methods import bootstrap, generative, search

    parts = [
        MethodPart(
            "paths", ("pairs", "bootstrap", "chains"), bootstrap.check_part, paths=bootstrap.paths
        ),
        MethodPart(
            "generative",
            ("generative",),
            generative.check_part,
            generative.report_pairs,
            run_fields=generative.run_fields,
        ),
        MethodPart("search", ("search",), search.check_part, plan_path=search.plan_path),
    ]
    return {p.name: p for p in parts}


METHOD_PARTS: dict[str, MethodPart] = _parts()


def check_method(chk: Any, method: Any, ctx: MethodContext, where: str) -> Any:
    """Every part's checks of ``method`` in turn; returns it with each part's fields parsed."""
    for part in METHOD_PARTS.values():
        method = part.check(chk, method, ctx, where)
    return method


def report_pairs(table: Any) -> list[tuple[str, str]]:
    """Every part's (without, with) variant pairs for the report to compare, in order."""
    out: list[tuple[str, str]] = []
    for part in METHOD_PARTS.values():
        if part.report_pairs is not None:
            out += part.report_pairs(table)
    return list(dict.fromkeys(out))


def method_paths(method: Any, ladder: list[str]) -> list[list[str]]:
    """The ladder paths (weak, [rungs], strong) ``method`` trains, from the part that owns them."""
    owners = [p for p in METHOD_PARTS.values() if p.paths is not None]
    if len(owners) != 1:
        raise RuntimeError(f"exactly one method part must own paths, got {len(owners)}")
    return owners[0].paths(method, ladder)


def run_fields(method: Any) -> dict[str, Any]:
    """What the parts add to each transfer run of ``method`` (Run fields, hashed in its key)."""
    out: dict[str, Any] = {}
    for part in METHOD_PARTS.values():
        if part.run_fields is not None:
            out.update(part.run_fields(method))
    return out


def plan_path(method: Any, runs: list[Any]) -> tuple[list[Any], list[Any]]:
    """(runs to train, searches) for one path's transfer runs: each part in turn may take runs
    over (a search trains its selected run after its trials, not the path's run)."""
    searches: list[Any] = []
    for part in METHOD_PARTS.values():
        if part.plan_path is not None:
            runs, found = part.plan_path(method, runs)
            searches += found
    return runs, searches
