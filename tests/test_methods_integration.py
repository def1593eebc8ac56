"""End to end on a real local Ray cluster: spec -> Tune -> Train -> DeepSpeed -> store -> report,
with every method: naive fine-tuning, bootstrapping through an intermediate model, generative
fine-tuning, and an Optuna TPE search scored on a weak-labelled validation split (never the test
split); then a rerun that must train nothing, the report files and comparisons, and the stages
read back as Tune ResultGrids.

Eleven small runs: b's pretraining (causal LM on a corpus file), 3 GT, xent a->b (also the
chain's first step) and a->c, the chain's last step b'->c, generative a->c, two search trials and
the selected a->c run. Model a trains with ZeRO-2, b over 2 workers with ZeRO-3 (its pretraining
too: the stored weights are gathered from the partitions), c with ZeRO-1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from w2sray.analysis.collect import collect
from w2sray.artifacts import TEST_PREDICTIONS, WEAK_LABELS
from w2sray.cli import main
from w2sray.data.synthetic import synthetic_rows
from w2sray.runs import plan_sweep
from w2sray.spec import load_spec
from w2sray.store import Store
from w2sray.sweep import execute, result_grid

SPEC = {
    "name": "methods-itest",
    "datasets": [{"name": "synthetic", "n_gt": 256, "n_weak": 256, "n_test": 200}],
    "models": [
        {"name": "a", "source": "w2s-tiny-1", "resources": {"zero_stage": 2}},
        {"name": "b", "source": "w2s-tiny-2", "resources": {"workers": 2, "zero_stage": 3}},
        {"name": "c", "source": "w2s-tiny-3"},
    ],
    "methods": [
        {"name": "xent", "loss": "xent", "pairs": [["a", "b"], ["a", "c"]]},
        {"name": "boot", "loss": "xent", "bootstrap": True, "pairs": [["a", "c"]]},
        {"name": "gen", "loss": "xent", "generative": {"epochs": 1}, "pairs": [["a", "c"]]},
        {
            "name": "tpe",
            "loss": "logconf",
            "params": {"warmup_frac": 0.2},
            "pairs": [["a", "c"]],
            "search": {"space": {"alpha_max": [0.1, 1.0]}, "num_samples": 2, "seed": 3},
        },
    ],
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 24},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}


@pytest.fixture(scope="module")
def swept(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    spec_path = root / "spec.yaml"
    # b pretrains on a corpus file whose words the labelled splits lack: its vocabulary (and so
    # its parameter count) tells whether a run of b started from the pretrained folder.
    corpus = root / "corpus.txt"
    texts, _ = synthetic_rows(400, seed=9)
    corpus.write_text("\n".join(f"{t} extra{i % 50}" for i, t in enumerate(texts)))
    recipe = {"corpus": {"path": str(corpus), "n": 400}, "steps": 30, "batch_size": 16}
    models = [dict(m) for m in SPEC["models"]]
    models[1]["pretrain"] = {**recipe, "max_length": 24}
    raw = {**SPEC, "models": models, "storage": str(root / "store")}
    spec_path.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_path)
    plan = plan_sweep(spec)
    outcome = execute(spec, plan, Store(spec.storage), printer=lambda s: None)
    return spec_path, spec, plan, outcome


def test_runs_complete_with_their_layout(swept):
    _, spec, plan, outcome = swept
    store = Store(spec.storage)
    layout = {"a": (1, 2), "b": (2, 3), "c": (1, 1)}
    for run in plan.gt + plan.transfer:
        m = store.read_json(run.key, "metrics.json")
        assert 0.0 <= m["acc"] <= 1.0 and m["n_test"] == 200
        assert m["steps"] == 256 // 16
        assert (m["workers"], m["zero_stage"]) == layout[run.model.name]
        # every run publishes soft labels for split B (weak labels, or a chain step's labels)
        labels = store.read_parquet(run.key, WEAK_LABELS)
        assert len(labels) == 256 and labels["p1"].between(0, 1).all()
        assert labels["p1"].nunique() > 10  # soft, not hard labels
    # trained in this sweep: the planned runs and the search's selected run (trials apart)
    selected = _run_selected(store, spec)["key"]
    assert sorted(outcome.done) == sorted([r.key for r in plan.all_runs()] + [selected])


def _run(plan, method, weak, strong):
    rows = [
        r
        for r in plan.manifest_rows()
        if r["method"] == method and r["weak"] == weak and r["model"] == strong
    ]
    assert len(rows) == 1, rows
    return rows[0]


def test_every_method_ran(swept):
    _, spec, plan, outcome = swept
    assert outcome.failed == {}
    assert len(plan.gt) == 3 and len(plan.searches) == 1
    # xent a->b, xent a->c, boot's last step b'->c, gen a->c (boot's first step is xent a->b)
    assert len(plan.transfer) == 4
    assert [name for name, _ in plan.stages] == ["pretrain", "gt", "transfer", "chain-2"]
    store = Store(spec.storage)
    assert all(store.is_complete(r.key) for r in plan.all_runs())
    assert len(outcome.searched) == 1


def test_pretraining_runs_once_and_every_run_of_the_model_starts_from_it(swept):
    _, spec, plan, _ = swept
    store = Store(spec.storage)
    (pre,) = plan.pretrain
    m = store.read_json(pre.key, "metrics.json")
    assert (m["workers"], m["zero_stage"], m["steps"]) == (2, 3, 30)
    assert m["lm_loss"] < m["lm_loss_start"]  # the LM learned something from the corpus
    folder = Path(store.local_folder(pre.key, "model"))
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    b_runs = [r for r in plan.gt + plan.transfer if r.model.name == "b"]
    assert len(b_runs) == 2  # b's GT run and xent a->b
    for run in b_runs:
        assert store.read_json(run.key, "config.json")["model"]["pretrain"] == pre.key
        # the corpus's vocabulary, not split A's: the LM's parameters plus the 2-way head
        params = store.read_json(run.key, "metrics.json")["params"]
        assert params == m["params"] + 48 * 2 + 2
    # the pretrained weights were saved whole from the ZeRO-3 partitions and load back
    import transformers

    lm = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert sum(p.numel() for p in lm.parameters()) == m["params"]
    assert m["vocab_size"] == lm.config.vocab_size > 50


def test_bootstrapping_chains_through_the_intermediate_model(swept):
    _, spec, plan, _ = swept
    store = Store(spec.storage)
    step = _run(plan, "xent", "a", "b")  # the chain's first step is the direct a->b run
    final = _run(plan, "boot", "a", "c")
    gt_a = next(r for r in plan.gt if r.model.name == "a")
    config = store.read_json(final["key"], "config.json")
    assert config["upstream"] == [step["key"]]  # trained on b's labels, not a's
    assert final["weak_key"] == gt_a.key  # and its PGR is measured against a
    # the labels it trained on are the intermediate student's predictions on split B
    labels = store.read_parquet(step["key"], WEAK_LABELS)
    weak = store.read_parquet(gt_a.key, WEAK_LABELS)
    assert np.array_equal(labels["id"], weak["id"]) and not np.allclose(labels["p1"], weak["p1"])
    direct = _run(plan, "xent", "a", "c")
    assert direct["key"] != final["key"]


def test_generative_finetuning_trains_the_lm_first(swept):
    _, spec, plan, _ = swept
    store = Store(spec.storage)
    gen = _run(plan, "gen", "a", "c")
    plain = _run(plan, "xent", "a", "c")
    m = store.read_json(gen["key"], "metrics.json")
    assert m["gen_steps"] == 16 and np.isfinite(m["gen_loss"]) and m["gen_loss"] > 0
    assert "gen_steps" not in store.read_json(plain["key"], "metrics.json")
    p_gen = store.read_parquet(gen["key"], TEST_PREDICTIONS)["p1"]
    p_plain = store.read_parquet(plain["key"], TEST_PREDICTIONS)["p1"]
    assert not np.allclose(p_gen, p_plain)  # same data, seed and labels: only the LM phase


def test_search_selects_by_weak_validation_and_never_sees_test(swept):
    _, spec, plan, _ = swept
    store = Store(spec.storage)
    search = plan.searches[0]
    record = store.read_search(search.key)
    assert record["metric"] == "weak_val" and len(record["trials"]) == 2
    values = [t["value"] for t in record["trials"]]
    best = record["trials"][int(np.argmax(values))]
    assert record["best"] == best["values"]
    for trial in record["trials"]:
        key = trial["run_key"]
        metrics = store.read_json(key, "metrics.json")
        # a trial has validation metrics only: nothing was computed on the test split
        assert "acc" not in metrics and "auc" not in metrics and metrics["n_test"] == 0
        assert metrics["val_weak_acc"] == trial["value"]
        assert not store.exists(key, TEST_PREDICTIONS)
        assert 0.1 <= trial["values"]["alpha_max"] <= 1.0
        # trained on split B minus the 20% held out
        assert metrics["examples"] == 256 - round(256 * 0.2)
    selected = _run_selected(store, spec)
    assert selected["variant"] == "tpe[search:weak_val]"
    config = store.read_json(selected["key"], "config.json")
    assert config["loss_params"] == {"alpha_max": best["values"]["alpha_max"], "warmup_frac": 0.2}
    assert store.read_json(selected["key"], "metrics.json")["examples"] == 256


def _run_selected(store, spec):
    man = next(m for m in store.manifests() if m["name"] == spec.name)
    rows = [r for r in man["runs"] if r["method"] == "tpe"]
    assert len(rows) == 1
    return rows[0]


def test_report_compares_every_method(swept, tmp_path):
    spec_path, spec, _, _ = swept
    store = Store(spec.storage)
    tables = collect(store)
    variants = set(tables.results["variant"])
    assert variants == {"xent", "boot", "gen", "tpe[search:weak_val]"}
    boot = tables.results[tables.results["variant"] == "boot"].iloc[0]
    assert boot["chain_length"] == 3 and (boot["weak"], boot["strong"]) == ("a", "c")
    assert main(["report", spec.storage, "--out", str(tmp_path)]) == 0
    comp = pd.read_csv(tmp_path / "comparisons.csv")
    pgr = comp[comp["metric"] == "pgr"]
    assert set(pgr["b_variant"]) == {"boot", "gen", "tpe[search:weak_val]"}
    assert set(pgr["a_variant"]) == {"xent"}
    summary = (tmp_path / "summary.md").read_text()
    assert "tpe[search:weak_val]" in summary and "PGR by pair and method" in summary
    # PGR in the table is exactly the formula over the stored accuracies
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert len(table) == len(pd.read_csv(tmp_path / "results.csv")) == 5
    for _, row in table.iterrows():
        acc = {k: store.read_json(row[k], "metrics.json")["acc"] for k in _KEYS}
        weak, ceil, w2s = acc["weak_key"], acc["ceiling_key"], acc["run_key"]
        if abs(ceil - weak) > 1e-9:
            assert row["pgr"] == pytest.approx((w2s - weak) / (ceil - weak))
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert "w2s_vs_ceiling.png" in pngs and len(pngs) == 5  # 4 heatmaps + the scatter
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in tmp_path.glob("*.png"))
    assert "<img" in (tmp_path / "report.html").read_text()
    manifest = json.loads((Path(spec.storage) / "sweeps" / f"{spec.name}.json").read_text())
    assert manifest["ladder"] == ["a", "b", "c"]


_KEYS = ("weak_key", "ceiling_key", "run_key")


def test_rerun_trains_and_searches_nothing(swept):
    _, spec, plan, _ = swept
    before = json.dumps(Store(spec.storage).read_search(plan.searches[0].key), sort_keys=True)
    runs = Path(spec.storage) / "runs"
    stamps = {d.name: (d / "DONE.json").stat().st_mtime_ns for d in runs.iterdir()}
    outcome = execute(spec, plan, Store(spec.storage), printer=lambda s: None)
    assert outcome.done == [] and outcome.failed == {}
    assert {d.name: (d / "DONE.json").stat().st_mtime_ns for d in runs.iterdir()} == stamps
    assert json.dumps(Store(spec.storage).read_search(plan.searches[0].key), sort_keys=True) == (
        before
    )


def test_results_as_a_tune_result_grid(swept):
    _, spec, plan, _ = swept
    grid = result_grid(Store(spec.storage), f"{spec.name}-search")
    assert len(grid) == 2
    keys = {r.metrics["run_key"] for r in grid}
    record = Store(spec.storage).read_search(plan.searches[0].key)
    assert keys == {t["run_key"] for t in record["trials"]}
    gt = result_grid(Store(spec.storage), f"{spec.name}-gt")
    assert sorted(k for r in gt for k in r.config["runs"]) == sorted(r.key for r in plan.gt)
    # each run's metrics are findable by its key, packed or not
    store = Store(spec.storage)
    rows = pd.concat([r.metrics_dataframe for r in gt])
    for run in plan.gt:
        (acc,) = rows.loc[rows["run_key"] == run.key, "acc"].dropna().unique()
        assert acc == store.read_json(run.key, "metrics.json")["acc"]
