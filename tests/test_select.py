"""Model selection on held-out training rows (``train.select``, w2sray/train/select.py): the
hold-out, the scores, keeping and restoring the best state, the spec's checks and keys, and a
real sweep proving that selection reads neither test labels nor split B's ground truth."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from w2sray.data import DATASETS, make_splits
from w2sray.runs import Plan, plan_sweep
from w2sray.spec import SpecError, parse_spec
from w2sray.store import Store
from w2sray.sweep import execute
from w2sray.train.select import Selector, holdout, score


def test_holdout_is_a_fixed_disjoint_cut():
    rows, val = holdout(100, 0.2, seed=3)
    assert len(val) == 20 and len(rows) == 80
    assert set(rows) | set(val) == set(range(100)) and not set(rows) & set(val)
    assert np.array_equal(val, holdout(100, 0.2, seed=3)[1])  # same seed, same rows
    assert not np.array_equal(val, holdout(100, 0.2, seed=4)[1])
    assert len(holdout(3, 0.01, 0)[1]) == 1 and len(holdout(2, 0.5, 0)[0]) == 1  # never empty


def test_scores_against_hard_and_soft_targets():
    hard = np.array([0, 0, 1, 1])
    soft = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])  # weak labels as rows
    p1 = np.array([0.2, 0.6, 0.4, 0.9])
    assert score("weak_val_auc", hard, p1) == pytest.approx(0.75)
    assert score("weak_val_auc", soft, p1) == score("weak_val_auc", hard, p1)  # thresholded
    rows = [(0.1, 0.2), (0.4, 0.6), (0.7, 0.4), (0.8, 0.9)]  # (weak p1, predicted p1)
    want = -np.mean([t * np.log(q) + (1 - t) * np.log(1 - q) for t, q in rows])
    assert score("weak_val_loss", soft, p1) == pytest.approx(want)
    with pytest.raises(ValueError, match="unknown selection metric"):
        score("test_acc", hard, p1)


@pytest.mark.parametrize(
    "metric, values, best",
    [("weak_val_auc", [0.6, 0.9, 0.7, 0.8], 2), ("weak_val_loss", [0.6, 0.5, 0.7, 0.4], 4)],
)
def test_selector_keeps_and_restores_the_best_state(metric, values, best):
    model = torch.nn.Linear(3, 2)
    seen = iter(values)
    sel = Selector(metric, every=5, total_steps=18, evaluate=lambda: next(seen))
    states = {}
    for step in range(1, 19):
        with torch.no_grad():
            model.weight.fill_(float(step))  # "training"
        sel.on_step(step, model)
        states[step] = model.weight.detach().clone()
    assert [s for s, _ in sel.curve] == [5, 10, 15, 18]  # every 5 steps and the last
    best_step = [5, 10, 15, 18][best - 1]
    assert sel.best_step == best_step and sel.best_value == values[best - 1]
    sel.restore(model)
    assert torch.equal(model.weight, states[best_step])
    m = sel.metrics()
    assert m["select_step"] == best_step and m["select_curve"]["value"] == values


BASE = {
    "name": "sel",
    "storage": "unused",
    "datasets": [{"name": "synthetic", "n_gt": 64, "n_weak": 64, "n_test": 64}],
    "models": ["w2s-tiny-1", "w2s-tiny-2"],
    "methods": ["xent"],
    "train": {"epochs": 2, "batch_size": 16, "max_length": 24, "select": {"every": 3}},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}


@pytest.mark.parametrize(
    "select, field, words",
    [
        ({"metric": "test_acc"}, "train.select.metric", "weak_val_auc"),
        ({"every": 0}, "train.select.every", ">= 1"),
        ({"val_frac": 0.9}, "train.select.val_frac", "(0, 0.5]"),
        ({"patience": 3}, "train.select.patience", "unknown field"),
        ("yes", "train.select", "must be dict"),
    ],
)
def test_bad_select_names_the_field(select, field, words):
    raw = copy.deepcopy(BASE)
    raw["train"]["select"] = select
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert any(field in p and words in p for p in err.value.problems), err.value.problems


def test_select_refuses_restarts_and_keys_its_resolved_settings():
    raw = copy.deepcopy(BASE)
    raw["resources"]["max_failures"] = 2
    with pytest.raises(SpecError, match="resources.max_failures.*train.select"):
        parse_spec(raw)

    def keys(select):
        raw = copy.deepcopy(BASE)
        raw["train"]["select"] = select
        return [r.key for r in plan_sweep(parse_spec(raw)).all_runs()]

    written = {"metric": "weak_val_auc", "every": 3, "val_frac": 0.1}
    assert keys({"every": 3}) == keys(written)  # defaults written or not: the same runs
    assert keys({"every": 3, "val_frac": 0.2}) != keys(written)
    raw = copy.deepcopy(BASE)
    del raw["train"]["select"]
    off = [r.key for r in plan_sweep(parse_spec(raw)).all_runs()]
    assert not set(off) & set(keys(written))
    (run,) = [r for r in plan_sweep(parse_spec(BASE)).transfer]
    assert run.train.select == written


def test_selection_reads_neither_test_labels_nor_split_b_ground_truth(ray_cluster, tmp_path):
    """The same rows twice, once with every test label and every split-B ground-truth label
    flipped: the runs select the same steps on the same validation curves (bit for bit), while
    what does read those labels (test accuracy, weak-label accuracy) flips."""
    n = {"n_gt": 96, "n_weak": 96, "n_test": 64}
    texts, labels = DATASETS["synthetic"].load(sum(n.values()), 0)
    clean, poisoned = tmp_path / "clean.csv", tmp_path / "poisoned.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(clean, index=False)
    params = {"path": str(clean), "balance": False}
    s = make_splits("local", params, *n.values(), 0)
    flip = set(s.weak_texts) | set(s.test_texts)
    bad = [1 - y if t in flip else y for t, y in zip(texts, labels, strict=True)]
    pd.DataFrame({"text": texts, "label": bad}).to_csv(poisoned, index=False)
    p = make_splits("local", {**params, "path": str(poisoned)}, *n.values(), 0)
    assert (p.gt_texts, p.gt_labels, p.weak_texts) == (s.gt_texts, s.gt_labels, s.weak_texts)
    assert p.weak_labels == [1 - y for y in s.weak_labels]
    assert p.test_labels == [1 - y for y in s.test_labels]

    got = {}
    for name, path in (("clean", clean), ("poisoned", poisoned)):
        raw = copy.deepcopy(BASE)
        raw["datasets"] = [{"name": "local", "params": {**params, "path": str(path)}, **n}]
        raw["storage"] = str(tmp_path / name)
        spec = parse_spec(raw)
        plan = plan_sweep(spec)
        (weak_gt,) = [r for r in plan.gt if r.model.name == "w2s-tiny-1"]
        (transfer,) = plan.transfer
        store = Store(spec.storage)
        out = execute(spec, Plan(pretrain=(), gt=(weak_gt,), transfer=(transfer,)), store)
        assert out.failed == {}, out.failed
        got[name] = [store.read_json(k, "metrics.json") for k in (weak_gt.key, transfer.key)]

    for c, q in zip(got["clean"], got["poisoned"], strict=True):
        assert c["select_curve"] == q["select_curve"] and c["select_step"] == q["select_step"]
        assert c["select_val_rows"] == round(0.1 * 96) and len(c["select_curve"]["step"]) >= 3
        assert q["acc"] == pytest.approx(1 - c["acc"])  # the test labels did flip
    assert got["poisoned"][1]["weak_label_acc"] == pytest.approx(
        1 - got["clean"][1]["weak_label_acc"]
    )  # and so did split B's ground truth
