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
