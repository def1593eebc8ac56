"""Run packing (w2sray/packing.py, w2sray/train/pack.py): which runs share a worker group, and
a real stage on the session's Ray cluster where packed runs give the same results as runs
trained alone, a run that raises in a pack fails alone, and a rerun trains nothing."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from w2sray.artifacts import TEST_PREDICTIONS
from w2sray.packing import MAX_COST, make_packs, pack_key, packable, run_cost
from w2sray.runs import Plan, plan_sweep
from w2sray.spec import SpecError, parse_spec
from w2sray.store import Store
from w2sray.sweep import execute

RAW = {
    "name": "pack",
    "storage": "unused",
    "datasets": [{"name": "synthetic", "n_gt": 128, "n_weak": 64, "n_test": 64}],
    "models": ["w2s-tiny-1", "w2s-tiny-2"],
    "methods": ["xent"],
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 24},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}


def plan_of(**changes):
    raw = copy.deepcopy(RAW)
    raw.update(changes)
    return plan_sweep(parse_spec(raw))


def test_short_runs_with_equal_resources_share_packs_without_idling_slots():
    gt = list(plan_of().gt)  # 2 models x 2 seeds
    assert all(packable(r, MAX_COST) for r in gt)
    packs = make_packs(gt, slots=2, max_runs=4)
    assert [len(p) for p in packs] == [2, 2]  # 2 slots: two packs, not one of 4
    assert make_packs(gt, slots=1, max_runs=4) == [gt]
    assert [len(p) for p in make_packs(gt, slots=1, max_runs=3)] == [3, 1]
    assert all(len(p) == 1 for p in make_packs(gt, slots=1, max_runs=1))  # packing off
    assert sorted(r.key for p in packs for r in p) == sorted(r.key for r in gt)
    assert pack_key(packs[0]).startswith("pack-") and pack_key(packs[0]) != pack_key(packs[1])
    assert pack_key([gt[0]]) == gt[0].key  # a run alone keeps its name


def test_long_restartable_or_pretraining_runs_train_alone():
    gt = list(plan_of().gt)
    cheap, dear = sorted(gt, key=run_cost)[0], sorted(gt, key=run_cost)[-1]
    assert not packable(dear, max_cost=run_cost(dear) / 2)  # above the cost limit
    assert packable(cheap, max_cost=run_cost(cheap))
    restartable = list(plan_of(resources={"workers": 1, "max_failures": 1}).gt)
    assert all(packable(r, MAX_COST) for r in restartable)  # resumed by run (test_faults.py)
    corpus = {"corpus": {"dataset": "synthetic", "n": 100, "seed": 5}, "steps": 5}
    models = [{"name": "a", "source": "w2s-tiny-1", "pretrain": corpus}, "w2s-tiny-2"]
    (pre,) = plan_of(models=models).pretrain
    assert not packable(pre, MAX_COST)
    two = list(plan_of(models=["w2s-tiny-1", {"name": "b", "source": "w2s-tiny-2",
                                               "resources": {"workers": 2}}]).gt)  # fmt: skip
    assert sorted(len(p) for p in make_packs(two, slots=1)) == [2, 2]  # by resources


@pytest.mark.parametrize(
    "packing, field, words",
    [
        ({"max_runs": 0}, "packing.max_runs", ">= 1"),
        ({"max_cost": -1}, "packing.max_cost", "> 0"),
        ({"size": 2}, "packing.size", "unknown field"),
        ("on", "packing", "mapping"),
    ],
)
def test_bad_packing_names_the_field(packing, field, words):
    with pytest.raises(SpecError) as err:
        parse_spec({**RAW, "packing": packing})
    assert any(p.startswith(field) and words in p for p in err.value.problems), err.value.problems


def test_packing_changes_no_run_key():
    assert [r.key for r in plan_of(packing={"max_runs": 1}).all_runs()] == [
        r.key for r in plan_of().all_runs()
    ]


def test_packed_runs_match_runs_trained_alone(ray_cluster, tmp_path):
    """The 3 GT runs of a stage: packed (one pack, with a model that cannot load among them)
    and, in another store, each alone. Same metrics and predictions, bit for bit; the broken
    run fails alone with its own error; a rerun trains nothing."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt2", "n_layer": 1}')  # no weights
    models = ["w2s-tiny-1", "w2s-tiny-2", {"name": "broken", "source": str(broken)}]
    outs, stores = {}, {}
    for name, packing in (("packed", {"max_runs": 4}), ("alone", {"max_runs": 1})):
        raw = {**RAW, "models": models, "seeds": [0], "storage": str(tmp_path / name)}
        raw["max_concurrent_trials"] = 1  # one trial at a time: a single pack of all 3
        spec = parse_spec({**raw, "packing": packing})
        plan = plan_sweep(spec)
        gt = Plan(pretrain=(), gt=plan.gt, transfer=())
        stores[name] = Store(spec.storage)
        outs[name] = execute(spec, gt, stores[name], printer=print)
    (bad,) = [r.key for r in plan.gt if r.model.name == "broken"]
    good = sorted(r.key for r in plan.gt if r.key != bad)
    for out in outs.values():
        assert sorted(out.done) == good and list(out.failed) == [bad]
        assert "broken-model" in out.failed[bad] or "OSError" in out.failed[bad], out.failed
    packed, alone = stores["packed"], stores["alone"]
    assert "broken-model" in packed.read_failure(bad)["error"]
    for key in good:
        got, want = packed.read_json(key, "metrics.json"), alone.read_json(key, "metrics.json")
        for metric in ("acc", "auc", "train_loss", "steps", "weak_label_acc"):
            assert got[metric] == want[metric], (key, metric)
        pd.testing.assert_frame_equal(
            packed.read_parquet(key, TEST_PREDICTIONS),
            alone.read_parquet(key, TEST_PREDICTIONS),
            check_exact=True,
        )
    again = execute(spec, gt, packed, printer=print)
    assert again.done == [] and sorted(again.skipped) == good
