"""The method-part registry (w2sray/methods/__init__.py): every field a method has beyond its
loss belongs to one registered part, and a part added to the registry is checked for every
method of a spec and asked for the report's comparisons, with no other change."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from w2sray import methods
from w2sray.methods import METHOD_PARTS, MethodPart, report_pairs
from w2sray.spec import MethodSpec, SpecError, parse_spec

RAW = {
    "name": "parts",
    "storage": "unused",
    "datasets": [{"name": "synthetic", "n_gt": 64, "n_weak": 64, "n_test": 64}],
    "models": ["w2s-tiny-1", "w2s-tiny-2", "w2s-tiny-3"],
    "methods": ["xent", {"name": "boot", "loss": "xent", "bootstrap": True}],
    "seeds": [0],
}


def test_every_method_field_beyond_the_loss_belongs_to_one_part():
    owned = [f for part in METHOD_PARTS.values() for f in part.fields]
    assert len(owned) == len(set(owned))
    fields = {f.name for f in dataclasses.fields(MethodSpec)}
    assert fields - {"name", "loss", "params"} == set(owned)


def test_a_registered_part_is_checked_for_every_method(monkeypatch):
    seen = []

    def check(chk, method, ctx, where):
        seen.append((method.name, tuple(ctx.ladder), where))
        if method.bootstrap:
            chk.bad(f"{where}.bootstrap", "refused by the new part")
        return method

    parts = {**METHOD_PARTS, "new": MethodPart("new", (), check)}
    monkeypatch.setattr(methods, "METHOD_PARTS", parts)
    with pytest.raises(SpecError) as err:
        parse_spec(RAW)
    ladder = ("w2s-tiny-1", "w2s-tiny-2", "w2s-tiny-3")
    assert seen == [("xent", ladder, "methods[0]"), ("boot", ladder, "methods[1]")]
    assert err.value.problems == ["methods[1].bootstrap: refused by the new part"]


def test_report_pairs_gather_every_parts_pairs_once(monkeypatch):
    table = pd.DataFrame({"variant": ["xent", "xent+gen"]})
    extra = MethodPart("new", (), lambda *a: a[1], lambda t: [("xent", "xent+gen")] * 2)
    parts = {**METHOD_PARTS, "new": extra}
    monkeypatch.setattr(methods, "METHOD_PARTS", parts)
    assert report_pairs(table) == [("xent", "xent+gen")]


def _plan(raw):
    from w2sray.runs import plan_sweep

    return plan_sweep(parse_spec(raw))


def test_the_plan_expands_methods_only_through_the_parts_hooks(monkeypatch):
    """A part's plan hooks shape every transfer run of the plan with no change to runs.py:
    ``run_fields`` is hashed into the run keys, and ``plan_path`` may take a path's runs over
    (here: drops the bootstrapping chain's rung and reports only the last run)."""
    before = _plan(RAW)
    boot_before = [r for r in before.transfer if r.method == "boot"]
    # tiny-1 -> tiny-2 -> tiny-3; its first step is xent's tiny-1 -> tiny-2 run (one key)
    assert [r.depth for r in boot_before] == [2]
    assert boot_before[0].upstream[0] in {r.key for r in before.transfer if r.method == "xent"}

    def plan_path(method, runs):
        return (runs[-1:] if method.bootstrap else runs), []

    extra = MethodPart(
        "new",
        (),
        lambda *a: a[1],
        run_fields=lambda m: {"val_frac": 0.25} if m.bootstrap else {},
        plan_path=plan_path,
    )
    monkeypatch.setattr(methods, "METHOD_PARTS", {**METHOD_PARTS, "new": extra})
    after = _plan(RAW)
    xent = lambda plan: sorted(r.key for r in plan.transfer if r.method == "xent")  # noqa: E731
    assert xent(after) == xent(before)  # the hook leaves other methods' runs as they were
    boot = [r for r in after.transfer if r.method == "boot"]
    assert [r.depth for r in boot] == [2]  # its own rung (val_frac: a new key) was dropped
    assert boot[0].upstream[0] not in {r.key for r in after.transfer}
    assert boot[0].val_frac == 0.25
    assert boot[0].key not in {r.key for r in boot_before}  # the added field is keyed
    assert [r["key"] for r in after.manifest_rows() if r["method"] == "boot"] == [boot[0].key]


def test_exactly_one_part_owns_the_paths(monkeypatch):
    extra = MethodPart("new", (), lambda *a: a[1], paths=lambda m, ladder: [ladder[:2]])
    monkeypatch.setattr(methods, "METHOD_PARTS", {**METHOD_PARTS, "new": extra})
    with pytest.raises(RuntimeError, match="exactly one method part must own paths"):
        _plan(RAW)
