"""Linear probes on cached features (``train.probe``): features runs keyed by model and dataset
content (never seed, method or loss), computed once and reused; probe runs that train only the
head (the backbone is never built); a probe ground-truth run's weak labels feeding a transfer;
the spec's checks; and one real sweep through Tune -> Train that a second sweep (another
method) and a rerun reuse."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from w2sray.artifacts import CONFIG, FEATURES, METRICS, TEST_PREDICTIONS, WEAK_LABELS, record_files
from w2sray.packing import make_packs, run_cost
from w2sray.runs import plan_sweep
from w2sray.settings import ProbeSettings
from w2sray.spec import SpecError, parse_spec
from w2sray.store import Store
from w2sray.train.entries import entry_for
from w2sray.train.features import FEATURE_ARRAYS, compute_features, npz_bytes
from w2sray.train.probe import fit_head, fit_probe, load_features

BASE = {
    "name": "probes-test",
    "storage": "/unused",
    "datasets": [{"name": "latent", "n_gt": 64, "n_weak": 64, "n_test": 64}],
    "models": ["w2s-tiny-1", "w2s-tiny-2"],
    "methods": ["xent"],
    "seeds": [0],
    "train": {"max_length": 16, "batch_size": 16, "probe": {"head": "linear", "epochs": 2}},
}


def _raw(**train) -> dict:
    raw = copy.deepcopy(BASE)
    raw["train"].update(train)
    return raw


def _plan(raw: dict):
    return plan_sweep(parse_spec(raw))


# --- keys and the plan ------------------------------------------------------------------------


def test_one_features_run_per_model_and_dataset_whatever_the_seeds_and_methods():
    plan = _plan(BASE)
    assert [name for name, _ in plan.stages] == ["features", "gt", "transfer"]
    assert len(plan.features) == 2
    raw = copy.deepcopy(BASE)
    raw["seeds"] = [0, 1, 2]
    raw["methods"] = ["xent", {"name": "logconf", "loss": "logconf", "params": {"alpha_max": 0.5}}]
    raw["train"]["probe"] = {"head": "logreg", "weight_decay": 0.01}  # probe settings too
    more = _plan(raw)
    assert len(more.gt) == 6 and len(more.transfer) == 6
    assert [r.key for r in more.features] == [r.key for r in plan.features]
    by_model = {r.model.name: r.key for r in plan.features}
    for run in [*more.gt, *more.transfer]:
        assert run.features == by_model[run.model.name]
        assert run.features in run.needs


@pytest.mark.parametrize(
    "change",
    [
        {"models": ["w2s-tiny-2", "w2s-tiny-3"]},  # the model
        {"models": [{"name": "w2s-tiny-1", "pooling": "mean"}, "w2s-tiny-2"]},  # its pooling
        {"datasets": [{"name": "latent", "n_gt": 64, "n_weak": 64, "n_test": 32}]},  # data
        {"datasets": [{"name": "latent", "n_gt": 64, "n_weak": 64, "n_test": 64, "split_seed": 3}]},
        {"datasets": [{"name": "synthetic", "n_gt": 64, "n_weak": 64, "n_test": 64}]},
        {"train": {**BASE["train"], "max_length": 24}},
    ],
)
def test_features_key_follows_model_pooling_and_dataset(change):
    raw = {**copy.deepcopy(BASE), **change}
    before = {r.key for r in _plan(BASE).features}
    after = {r.key for r in _plan(raw).features}
    assert before != after
    # renaming a model is not a change of content
    renamed = copy.deepcopy(BASE)
    renamed["models"] = [{"name": "weak", "source": "w2s-tiny-1"}, "w2s-tiny-2"]
    assert {r.key for r in _plan(renamed).features} == before


def test_features_and_probe_keys_ignore_fine_tuning_settings():
    """A probe run keeps only what a probe uses: the fine-tuning lr or epochs do not retrain
    it nor its features."""
    plan = _plan(BASE)
    other = _plan(_raw(lr=0.5, epochs=7.0, weight_decay=0.1, grad_clip=3.0))
    assert [r.key for r in other.all_runs()] == [r.key for r in plan.all_runs()]
    gt = plan.gt[0]
    assert gt.train.as_dict() == {
        "probe": {
            "head": "linear",
            "epochs": 2.0,
            "lr": 3e-2,
            "weight_decay": 0.0,
            "batch_size": 16,
        },
        "max_length": 16,
        "dtype": "auto",
    }
    assert gt.resources.workers == 1 and gt.resources.gpus_per_worker == 0
    # the probe's own settings are part of the key: a written default is the same run
    same = _plan(_raw(probe={"head": "linear", "epochs": 2, "lr": 0.03, "batch_size": 16}))
    assert [r.key for r in same.gt] == [r.key for r in plan.gt]
    changed = _plan(_raw(probe={"head": "linear", "epochs": 3}))
    assert [r.key for r in changed.gt] != [r.key for r in plan.gt]
    assert _plan(_raw(probe={})).gt[0].train.as_dict()["probe"] == {
        "head": "logreg", "epochs": 100.0, "lr": 1.0, "weight_decay": 1e-4, "batch_size": None
    }  # fmt: skip


def test_a_probe_weak_model_leaves_the_fine_tuned_students_gt_key_alone():
    raw = copy.deepcopy(BASE)
    del raw["train"]["probe"]
    tuned = _plan(raw)
    raw["models"] = [{"name": "w2s-tiny-1", "train": {"probe": {"head": "logreg"}}}, "w2s-tiny-2"]
    mixed = _plan(raw)
    assert len(mixed.features) == 1 and mixed.features[0].model.name == "w2s-tiny-1"
    gt = {r.model.name: r for r in mixed.gt}
    assert gt["w2s-tiny-2"].key == [r for r in tuned.gt if r.model.name == "w2s-tiny-2"][0].key
    assert gt["w2s-tiny-1"].probe.head == "logreg"
    (transfer,) = mixed.transfer  # fine-tuned student on the probe's weak labels
    assert transfer.upstream == (gt["w2s-tiny-1"].key,) and transfer.probe is None


def test_packing_puts_probes_in_one_pack_and_packs_features_runs():
    plan = _plan(BASE)
    assert all(run_cost(r) == 0.0 for r in plan.gt)
    assert all(run_cost(r) > 0 for r in plan.features)
    # probes fill one pack whatever the slots (a second worker group would cost more)
    assert [len(p) for p in make_packs(list(plan.gt), slots=2)] == [2]
    assert [len(p) for p in make_packs(list(plan.gt), slots=2, max_runs=1)] == [1, 1]
    assert [len(p) for p in make_packs(list(plan.features), slots=1)] == [2]
    assert [len(p) for p in make_packs(list(plan.features), slots=2)] == [1, 1]


def test_entry_points_by_kind_and_probe():
    plan = _plan(BASE)
    assert entry_for(plan.features[0].to_config()).__name__ == "features_loop_per_worker"
    assert entry_for(plan.gt[0].to_config()).__name__ == "probe_loop_per_worker"
    assert entry_for(plan.transfer[0].to_config()).__name__ == "probe_loop_per_worker"
    raw = copy.deepcopy(BASE)
    del raw["train"]["probe"]
    assert entry_for(_plan(raw).gt[0].to_config()).__name__ == "train_loop_per_worker"


# --- the spec's checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "probe, field, words",
    [
        ({"head": "svm"}, "train.probe.head", "must be one of linear, logreg"),
        ({"epochs": 0}, "train.probe.epochs", "> 0"),
        ({"lr": -1}, "train.probe.lr", "> 0"),
        ({"weight_decay": -0.1}, "train.probe.weight_decay", ">= 0"),
        ({"batch_size": 0}, "train.probe.batch_size", ">= 1"),
        ({"head": "logreg", "batch_size": 8}, "train.probe.batch_size", "full-batch"),
        ({"layers": 2}, "train.probe.layers", "unknown field"),
        ("yes", "train.probe", "must be dict"),
    ],
)
def test_bad_probe_settings_name_the_field(probe, field, words):
    with pytest.raises(SpecError) as err:
        parse_spec(_raw(probe=probe), "sweep.yaml")
    assert f"sweep.yaml: {field}: " in str(err.value) and words in str(err.value)


def test_probe_with_lora_is_refused_top_level_and_per_model():
    with pytest.raises(SpecError, match=r"train\.probe: .*train\.lora"):
        parse_spec(_raw(lora={"r": 4}))
    raw = copy.deepcopy(BASE)
    raw["models"] = ["w2s-tiny-1", {"name": "w2s-tiny-2", "train": {"lora": {"r": 4}}}]
    with pytest.raises(SpecError, match=r"models\[1\]\.train\.probe: "):
        parse_spec(raw)
    # the model turns the probe off: LoRA alone is fine
    raw["models"][1]["train"]["probe"] = None
    assert parse_spec(raw).train_for(parse_spec(raw).models[1]).probe is None


def test_probe_students_refuse_generative_and_searches_but_a_probe_supervisor_does_not():
    gen = {"name": "gen", "loss": "xent", "generative": True}
    search = {"name": "s", "loss": "logconf", "search": {"space": {"alpha_max": [0.1, 1.0]}}}
    for method, field in ((gen, "methods[0].generative"), (search, "methods[0].search")):
        raw = copy.deepcopy(BASE)
        raw["methods"] = [method]
        with pytest.raises(SpecError) as err:
            parse_spec(raw, "s.yaml")
        assert f"s.yaml: {field}: " in str(err.value) and "w2s-tiny-2" in str(err.value)
        # only the weak model is a probe: its weak labels train a fine-tuned student
        raw["train"].pop("probe")
        raw["models"] = [{"name": "w2s-tiny-1", "train": {"probe": {}}}, "w2s-tiny-2"]
        parse_spec(raw)


def test_cli_refuses_a_bad_probe_with_exit_2_and_plan_lists_features(tmp_path, capsys):
    import yaml

    from w2sray.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_raw(probe={"head": "svm"}, lora={"r": 2})))
    assert main(["plan", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: train.probe.head: must be one of linear, logreg" in err
    assert f"{bad}: train.probe: a probe trains only a head" in err
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**_raw(), "storage": str(tmp_path / "store")}))
    assert main(["plan", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.count("\nfeatures ") == 2 and "probe:linear" in out
    assert "5 runs: 2 features (for probes), 2 ground-truth" in out


# --- the head, in process --------------------------------------------------------------------


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as fit_probe trains small heads (threads only contend)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("head", ["linear", "logreg"])
def test_both_heads_fit_a_separable_problem(head, one_thread):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=gen)
    y = (x[:, 0] - x[:, 3] > 0).float()
    lr, batch = (1e-2, 32) if head == "linear" else (1.0, None)
    probe = ProbeSettings(head, epochs=20.0, lr=lr, weight_decay=0.0, batch_size=batch)
    fitted, losses, _ = fit_head(x, torch.stack([1 - y, y], 1), probe, "xent", {}, seed=0)
    acc = ((torch.softmax(fitted(x), -1)[:, 1] > 0.5).float() == y).float().mean()
    assert acc > 0.95 and losses[-1] < losses[0]
    again, _, _ = fit_head(x, torch.stack([1 - y, y], 1), probe, "xent", {}, seed=0)
    assert torch.equal(again.weight, fitted.weight)  # seeded: the same head


def _store_features(plan, store: Store) -> None:
    for run in plan.features:
        arrays, metrics = compute_features(run.to_config(), store)
        store.write_run(
            run.key, {FEATURES: npz_bytes(arrays), **record_files(run.to_config(), metrics)}
        )


def test_probe_runs_read_features_only_and_gt_weak_labels_feed_the_transfer(tmp_path, monkeypatch):
    """In process, the worker functions themselves: the features match the classifier's pooled
    output; a probe GT run and the transfer on its weak labels train with the backbone loader
    poisoned (it is never called); only the head's parameters exist in a probe run."""
    import w2sray.models
    import w2sray.models.registry
    from w2sray.data import make_splits
    from w2sray.models import W2SClassifier, load_model
    from w2sray.train.loop import Encoded

    raw = _raw(select={"metric": "weak_val_loss", "every": 2, "val_frac": 0.25})
    raw["storage"] = str(tmp_path / "store")
    plan = _plan(raw)
    store = Store(raw["storage"])
    _store_features(plan, store)
    feats = load_features(store, plan.features[0].key)
    assert set(feats) == set(FEATURE_ARRAYS) and feats["gt"].dtype == np.float32
    # the features are the classifier's pooled backbone output (seed 0's random tiny-1)
    ds = plan.features[0].dataset
    splits = make_splits(ds.name, ds.params, 64, 64, 64, 0)
    loaded = load_model("w2s-tiny-1", seed=0, corpus=splits.gt_texts)
    model = W2SClassifier(loaded.backbone, loaded.pooling).eval()
    enc = Encoded(loaded.tokenizer, splits.test_texts[:5], 16)
    with torch.no_grad():
        want = model.pooled(*enc.batch(np.arange(5), torch.device("cpu"))).numpy()
    np.testing.assert_allclose(feats["test"][:5], want, atol=1e-5)
    assert np.array_equal(feats["weak_ids"], splits.weak_ids)

    def never(*a, **k):
        raise AssertionError("a probe run built a backbone")

    monkeypatch.setattr(w2sray.models.registry, "load_model", never)
    monkeypatch.setattr(w2sray.models, "load_model", never)
    gt = {r.model.name: r for r in plan.gt}
    for run in plan.gt:
        files, metrics = fit_probe(run.to_config(), store)
        store.write_run(run.key, files)
        dim = metrics["feature_dim"]
        assert metrics["params"] == metrics["trainable_params"] == 2 * dim + 2
        assert metrics["probe"] == "linear" and metrics["examples"] == 48  # 16 held out
        assert metrics["select_val_rows"] == 16 and metrics["select_step"] is not None
        assert set(files) >= {CONFIG, METRICS, TEST_PREDICTIONS, WEAK_LABELS}
    (transfer,) = plan.transfer
    weak = store.read_parquet(gt["w2s-tiny-1"].key, WEAK_LABELS)
    assert np.array_equal(weak["id"].to_numpy(), feats["weak_ids"])
    files, metrics = fit_probe(transfer.to_config(), store)
    assert 0 <= metrics["acc"] <= 1 and metrics["features_key"] == transfer.features
    # the transfer trains on exactly the probe GT run's split-B predictions
    from w2sray.train.probe import targets_of

    targets = targets_of(transfer.to_config(), load_features(store, transfer.features), store)
    np.testing.assert_allclose(targets[:, 1], weak["p1"].to_numpy())
    # weak labels of another split B are refused, not silently used
    from w2sray.store import parquet_bytes

    shuffled = weak.iloc[::-1].reset_index(drop=True)
    store.write_run("gt-elsewhere", {WEAK_LABELS: parquet_bytes(shuffled)})
    other = {**transfer.to_config(), "upstream": ["gt-elsewhere"]}
    with pytest.raises(ValueError, match="do not match split B"):
        fit_probe(other, store)


# --- through Ray ------------------------------------------------------------------------------


def test_probe_sweep_through_ray_reuses_features_across_methods_and_reruns(ray_cluster, tmp_path):
    """Real sweeps (Tune -> Train, packs, the store). First the features and probe GT runs of
    a 2-model ladder; then a sweep with a method of its own trains only its transfer, on the
    probe GT run's weak labels (no features or GT run again); a rerun trains nothing."""
    from w2sray.runs import Plan
    from w2sray.sweep import execute

    raw = _raw()
    raw["storage"] = str(tmp_path / "store")
    raw["methods"] = [{"name": "logconf", "loss": "logconf", "params": {"alpha_max": 0.5}}]
    raw["max_concurrent_trials"] = 1  # one pack, one worker group per stage: the cheapest here
    spec = parse_spec(raw)
    plan = plan_sweep(spec)
    store = Store(spec.storage)
    first = Plan(features=plan.features, gt=plan.gt, transfer=())
    out = execute(spec, first, store, printer=lambda s: None)
    assert out.failed == {}, out.failed
    assert sorted(out.done) == sorted(r.key for r in first.all_runs())
    for run in plan.features:
        m = store.read_json(run.key, METRICS)
        assert m["feature_dim"] == {"w2s-tiny-1": 16, "w2s-tiny-2": 48}[run.model.name]
        assert m["examples"] == {"gt": 64, "weak": 64, "test": 64}

    out = execute(spec, plan, store, printer=lambda s: None)
    assert out.failed == {}, out.failed
    (transfer,) = plan.transfer
    assert out.done == [transfer.key]  # no features run, no GT run trained again
    assert {r.key for r in [*plan.features, *plan.gt]} == set(out.skipped)
    for run in [*plan.gt, transfer]:
        m = store.read_json(run.key, METRICS)
        assert m["probe"] == "linear" and m["params"] == 2 * m["feature_dim"] + 2
        assert len(store.read_parquet(run.key, TEST_PREDICTIONS)) == 64
    assert store.read_json(transfer.key, CONFIG)["upstream"] == [plan.gt[0].key]
    assert execute(spec, plan, store, printer=lambda s: None).done == []  # a rerun
