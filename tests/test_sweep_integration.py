"""End to end on a real local Ray cluster: spec -> Tune -> Train -> DeepSpeed -> store -> report.

One small sweep (2 built-in models, xent + logconf at two alphas, 1 seed); the strong model trains
over 2 workers with ZeRO-3, the weak one with ZeRO-2. Then a rerun that must train nothing, then
the report files.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import yaml

from w2sray.analysis.collect import collect
from w2sray.cli import main
from w2sray.runs import plan_sweep
from w2sray.spec import load_spec
from w2sray.store import Store
from w2sray.sweep import execute

SPEC = {
    "name": "itest",
    "datasets": [{"name": "synthetic", "n_gt": 256, "n_weak": 256, "n_test": 200}],
    "models": [
        {"name": "weak", "source": "w2s-tiny-1", "resources": {"zero_stage": 2}},
        {"name": "strong", "source": "w2s-tiny-2", "resources": {"workers": 2, "zero_stage": 3}},
    ],
    "methods": [
        {"name": "xent", "loss": "xent"},
        {"name": "logconf", "loss": "logconf", "params": {"alpha_max": [0.5, 1.0]}},
    ],
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 24},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}


@pytest.fixture(scope="module")
def swept(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({**SPEC, "storage": str(root / "store")}))
    spec = load_spec(spec_path)
    plan = plan_sweep(spec)
    outcome = execute(spec, plan, Store(spec.storage), printer=lambda s: None)
    return spec_path, spec, plan, outcome


def test_sweep_trains_every_run(swept):
    _, spec, plan, outcome = swept
    assert outcome.failed == {}
    assert len(plan.gt) == 2 and len(plan.transfer) == 3
    assert sorted(outcome.done) == sorted(r.key for r in plan.all_runs())
    store = Store(spec.storage)
    for run in plan.all_runs():
        assert store.is_complete(run.key)
        m = store.read_json(run.key, "metrics.json")
        assert 0.0 <= m["acc"] <= 1.0 and m["n_test"] == 200
        assert m["steps"] == 256 // 16
        want = (2, 3) if run.model["name"] == "strong" else (1, 2)
        assert (m["workers"], m["zero_stage"]) == want
    # GT runs publish soft weak labels for split B, one per example, as probabilities
    weak = next(r for r in plan.gt if r.model["name"] == "weak")
    labels = store.read_parquet(weak.key, "weak_labels.parquet")
    assert len(labels) == 256 and labels["p1"].between(0, 1).all()
    assert labels["p1"].nunique() > 10  # soft, not hard labels


def test_rerun_trains_nothing(swept):
    spec_path, spec, plan, _ = swept
    before = {
        r.key: os.path.getmtime(os.path.join(spec.storage, "runs", r.key, "DONE.json"))
        for r in plan.all_runs()
    }
    outcome = execute(spec, plan, Store(spec.storage), printer=lambda s: None)
    assert outcome.done == [] and outcome.failed == {}
    assert sorted(outcome.skipped) == sorted(before)
    after = {
        k: os.path.getmtime(os.path.join(spec.storage, "runs", k, "DONE.json")) for k in before
    }
    assert after == before


def test_report_files(swept, capsys):
    _, spec, plan, _ = swept
    assert main(["report", spec.storage]) == 0
    printed = capsys.readouterr().out
    assert "PGR" in printed and "logconf(alpha_max=0.5" in printed
    out = os.path.join(spec.storage, "report")
    table = pd.read_parquet(os.path.join(out, "results.parquet"))
    assert len(table) == 3
    assert set(table["variant"]) == {
        "xent",
        "logconf(alpha_max=0.5)",
        "logconf(alpha_max=1.0)",
    }
    # PGR in the table is exactly the formula over the stored accuracies
    tables = collect(Store(spec.storage))
    store = Store(spec.storage)
    for _, row in table.iterrows():
        weak = store.read_json(row["weak_key"], "metrics.json")["acc"]
        ceil = store.read_json(row["ceiling_key"], "metrics.json")["acc"]
        w2s = store.read_json(row["run_key"], "metrics.json")["acc"]
        if abs(ceil - weak) > 1e-9:
            assert row["pgr"] == pytest.approx((w2s - weak) / (ceil - weak))
    assert len(tables.gt) == 2
    csv = pd.read_csv(os.path.join(out, "results.csv"))
    assert len(csv) == 3
    with open(os.path.join(out, "summary.md")) as fh:
        summary = fh.read()
    assert "weak" in summary and "strong" in summary
    pngs = [f for f in os.listdir(out) if f.endswith(".png")]
    assert "w2s_vs_ceiling.png" in pngs and len(pngs) == 4  # 3 heatmaps + the scatter
    for f in pngs:
        with open(os.path.join(out, f), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads(open(os.path.join(spec.storage, "sweeps", "itest.json")).read())
    assert manifest["ladder"] == ["weak", "strong"]


def test_failing_run_is_recorded_and_others_finish(ray_cluster, tmp_path, capsys):
    """A weak model that cannot load: its GT run fails with its error recorded, the strong
    model's GT run still completes, the transfer that needed the weak labels is marked failed
    without launching, and the report lists both failures."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt2", "n_layer": 1}')  # no weights
    raw = {
        **SPEC,
        "name": "failing",
        "storage": str(tmp_path / "store"),
        "models": [
            {"name": "broken", "source": str(broken)},
            {"name": "strong", "source": "w2s-tiny-1"},
        ],
        "methods": ["xent"],
    }
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_path)
    plan = plan_sweep(spec)
    outcome = execute(spec, plan, Store(spec.storage), printer=lambda s: None)
    store = Store(spec.storage)
    strong_gt = next(r for r in plan.gt if r.model["name"] == "strong")
    broken_gt = next(r for r in plan.gt if r.model["name"] == "broken")
    transfer = plan.transfer[0]
    assert outcome.done == [strong_gt.key] and store.is_complete(strong_gt.key)
    assert set(outcome.failed) == {broken_gt.key, transfer.key}
    assert not store.is_complete(broken_gt.key)
    failures = {f["key"]: f for f in store.failures()}
    assert "broken-model" in failures[broken_gt.key]["error"]
    assert "upstream" in failures[transfer.key]["error"]

    assert main(["report", spec.storage]) == 0
    with open(os.path.join(spec.storage, "report", "summary.md")) as fh:
        summary = fh.read()
    assert broken_gt.key in summary and transfer.key in summary

    # Repair the model and corrupt the finished run's metrics: a rerun redoes exactly the
    # failed runs and the corrupted one, and leaves no failure behind.
    from w2sray.data.tokenizer import build_synthetic_tokenizer
    from w2sray.models import load_model

    load_model("w2s-tiny-1", seed=0).backbone.save_pretrained(broken)
    build_synthetic_tokenizer().save_pretrained(broken)
    metrics = os.path.join(spec.storage, "runs", strong_gt.key, "metrics.json")
    with open(metrics, "r+") as fh:
        fh.truncate(10)
    assert not store.is_complete(strong_gt.key)
    again = execute(spec, plan, Store(spec.storage), printer=lambda s: None)
    assert sorted(again.done) == sorted([broken_gt.key, strong_gt.key, transfer.key])
    assert again.failed == {} and again.skipped == []
    assert all(store.is_complete(r.key) for r in plan.all_runs())
    assert store.failures() == []
