"""Every shipped sweep validates and plans offline, and the variants are what they say: the LoRA
variant of sst2_encoders trains adapters on the same data and ladder, the probe sweep trains
heads on cached features."""

from __future__ import annotations

from pathlib import Path

import pytest

from w2sray.runs import plan_sweep
from w2sray.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
# sst2_local.yaml names a file the user provides (tests/test_datasets.py covers it)
SHIPPED = sorted(p for p in (REPO / "sweeps").glob("*.yaml") if p.name != "sst2_local.yaml")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(REPO)  # the SST-2 sweeps' data paths are relative to the repository


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_sweep_validates_and_plans(path):
    spec = load_spec(path)
    plan = plan_sweep(spec)
    assert plan.gt and len(plan.gt) == len(spec.datasets) * len(spec.models) * len(spec.seeds)
    assert plan.transfer or plan.searches


def test_lora_variant_is_sst2_encoders_with_adapters():
    full = plan_sweep(load_spec(REPO / "sweeps" / "sst2_encoders.yaml"))
    lora = plan_sweep(load_spec(REPO / "sweeps" / "sst2_encoders_lora.yaml"))
    runs = [*lora.gt, *lora.transfer]
    assert all(r.train.lora["r"] == 8 for r in runs)
    assert not any(r.train.lora for r in [*full.gt, *full.transfer])
    # the same data, ladder and pairs; other runs (other keys)
    assert [r.dataset for r in lora.gt] == [r.dataset for r in full.gt]
    assert [r.model.name for r in lora.gt] == [r.model.name for r in full.gt]
    assert {r.key for r in runs}.isdisjoint({r.key for r in [*full.gt, *full.transfer]})


def test_probe_sweep_trains_heads_on_cached_features():
    plan = plan_sweep(load_spec(REPO / "sweeps" / "probes.yaml"))
    assert len(plan.features) == 3  # one per model and dataset
    runs = [*plan.gt, *plan.transfer]
    assert all(r.probe and r.features in {f.key for f in plan.features} for r in runs)
