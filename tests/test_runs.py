"""Tests for w2sray.runs: content keys and the plan a spec expands to."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from itertools import combinations

import pytest
import yaml

from w2sray import runs as runs_mod
from w2sray.data import DATASETS, DatasetEntry
from w2sray.runs import RESULT_VERSION, Run, manifest, plan_sweep
from w2sray.spec import Resources, parse_spec

LADDER = ["w2s-tiny-1", "w2s-tiny-2", "w2s-tiny-3"]


def base_raw() -> dict:
    return {
        "name": "unit",
        "storage": "/unused",
        "datasets": [
            {"name": "synthetic", "params": {"p_not": 0.5}, "n_gt": 20, "n_weak": 30, "n_test": 10}
        ],
        "models": [{"name": n, "source": n} for n in LADDER],
        "methods": [
            {"name": "naive", "loss": "xent"},
            {
                "name": "aux",
                "loss": "logconf",
                "params": {"alpha_max": [0.5, 0.75], "warmup_frac": 0.2},
            },
        ],
        "seeds": [0],
        "train": {"epochs": 1.0, "batch_size": 8, "lr": 0.001},
        "resources": {"workers": 1, "zero_stage": 1},
    }


def plan_of(raw: dict):
    return plan_sweep(parse_spec(copy.deepcopy(raw), "mem.yaml"))


def keyed(raw: dict) -> dict[tuple, str]:
    """Every run's key by a name-independent place: ('gt', dataset, rung, seed) or
    ('transfer', dataset, weak rung, strong rung, method index, params, seed)."""
    spec = parse_spec(copy.deepcopy(raw), "mem.yaml")
    plan = plan_sweep(spec)
    rung = {m.name: i for i, m in enumerate(spec.models)}
    method_idx = {m.name: i for i, m in enumerate(spec.methods)}
    out = {}
    for r in plan.gt:
        out[("gt", r.dataset.name, rung[r.model.name], r.seed)] = r.key
    for r in plan.transfer:
        place = (
            "transfer",
            r.dataset.name,
            rung[r.weak_model],
            rung[r.model.name],
            method_idx[r.method],
            json.dumps(r.loss_params, sort_keys=True),
            r.seed,
        )
        out[place] = r.key
    return out


BASE_KEYS = None


def base_keys() -> dict[tuple, str]:
    global BASE_KEYS
    if BASE_KEYS is None:
        BASE_KEYS = keyed(base_raw())
    return BASE_KEYS


# ------------------------------------------------------------------------------------------------
# Stability and purity


def test_keys_stable_across_parses_and_files(tmp_path):
    raw = base_raw()
    a, b = plan_of(raw), plan_of(raw)
    assert [r.key for r in a.all_runs()] == [r.key for r in b.all_runs()]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    from w2sray.spec import load_spec

    c = plan_sweep(load_spec(path))
    assert [r.key for r in c.all_runs()] == [r.key for r in a.all_runs()]
    # Keys are unique within a plan.
    keys = [r.key for r in a.all_runs()]
    assert len(keys) == len(set(keys))


def test_key_is_pure_function_of_content(monkeypatch):
    plan = plan_of(base_raw())
    for r in plan.all_runs():
        # Same content, different non-content fields -> same key.
        other = replace(
            r,
            model=replace(r.model, name="renamed"),
            method="renamed",
            weak_model="someone",
            ceiling_key="gt-whatever",
            resources=Resources(workers=8, zero_stage=3),
        )
        assert other.key == r.key
        # A fresh Run built from copies of the fields has the same key.
        rebuilt = Run(
            kind=r.kind,
            dataset=copy.deepcopy(r.dataset),
            model=copy.deepcopy(r.model),
            loss=r.loss,
            loss_params=dict(reversed(list(r.loss_params.items()))),  # dict order is irrelevant
            train=copy.deepcopy(r.train),
            seed=r.seed,
            upstream=tuple(r.upstream),
        )
        assert rebuilt.key == r.key
        assert r.key.startswith(f"{r.kind}-")
        config = r.to_config()
        assert config["key"] == r.key and config["content"] == r.content()
    # The whole training loop's version is in every key.
    keys = {r.key for r in plan.all_runs()}
    monkeypatch.setattr(runs_mod, "RESULT_VERSION", RESULT_VERSION + 1)
    bumped = {r.key for r in plan.all_runs()}
    assert len(bumped) == len(keys) and not bumped & keys


# ------------------------------------------------------------------------------------------------
# Sensitivity: every field that changes the result changes the key


def _all_change(raw: dict) -> None:
    before, after = base_keys(), keyed(raw)
    assert before.keys() == after.keys()
    same = [p for p in before if before[p] == after[p]]
    assert not same, f"keys unchanged for {same}"


DATA_AND_TRAIN_MUTATIONS = {
    "dataset params": lambda r: r["datasets"][0]["params"].update(p_not=0.3),
    "dataset extra param": lambda r: r["datasets"][0]["params"].update(p_very=0.1),
    "n_gt": lambda r: r["datasets"][0].update(n_gt=21),
    "n_weak": lambda r: r["datasets"][0].update(n_weak=31),
    "n_test": lambda r: r["datasets"][0].update(n_test=11),
    "split_seed": lambda r: r["datasets"][0].update(split_seed=1),
    "epochs": lambda r: r["train"].update(epochs=2.0),
    "batch_size": lambda r: r["train"].update(batch_size=16),
    "eval_batch_size": lambda r: r["train"].update(eval_batch_size=64),
    "lr": lambda r: r["train"].update(lr=0.002),
    "weight_decay": lambda r: r["train"].update(weight_decay=0.01),
    "lr_warmup_frac": lambda r: r["train"].update(lr_warmup_frac=0.1),
    "max_length": lambda r: r["train"].update(max_length=48),
    "grad_clip": lambda r: r["train"].update(grad_clip=0.5),
    "dtype": lambda r: r["train"].update(dtype="bf16"),
    "gradient_checkpointing": lambda r: r["train"].update(gradient_checkpointing=True),
    "select": lambda r: r["train"].update(select={"every": 5}),
    "lora": lambda r: r["train"].update(lora={"r": 4}),
    "probe": lambda r: r["train"].update(probe={}),  # more in tests/test_probes.py
}


@pytest.mark.parametrize("mutate", DATA_AND_TRAIN_MUTATIONS.values(), ids=DATA_AND_TRAIN_MUTATIONS)
def test_key_sensitive_to_data_train_and_seed(mutate):
    raw = base_raw()
    mutate(raw)
    _all_change(raw)


def test_key_sensitive_to_seed():
    raw = base_raw()
    raw["seeds"] = [0, 1]
    keys = keyed(raw)
    seed0 = {p[:-1]: k for p, k in keys.items() if p[-1] == 0}
    seed1 = {p[:-1]: k for p, k in keys.items() if p[-1] == 1}
    assert seed0.keys() == seed1.keys()
    assert all(seed0[p] != seed1[p] for p in seed0)
    # Adding a seed leaves seed 0's runs as they were.
    assert {(*p, 0): k for p, k in seed0.items()} == base_keys()


def test_train_setting_covered_completely():
    """Every TrainSettings field is mutated above (a new field must get a sensitivity test)."""
    from dataclasses import fields

    from w2sray.spec import TrainSettings

    assert {f.name for f in fields(TrainSettings)} <= set(DATA_AND_TRAIN_MUTATIONS)


MODEL_MUTATIONS = {
    "source": {"source": "w2s-tiny-4"},
    "revision": {"revision": "v2"},
    "pooling": {"pooling": "mean"},
    "trust_remote_code": {"trust_remote_code": True},
    "per-model train override": {"train": {"lr": 0.01}},
}


@pytest.mark.parametrize("change", MODEL_MUTATIONS.values(), ids=MODEL_MUTATIONS)
def test_key_sensitive_to_strong_model(change):
    """Changing the strongest rung changes its GT run and the transfers into it, only."""
    raw = base_raw()
    raw["models"][2].update(change)
    before, after = base_keys(), keyed(raw)
    for place in before:
        touches = (place[0] == "gt" and place[2] == 2) or (place[0] == "transfer" and place[3] == 2)
        assert (before[place] != after[place]) == touches, place


@pytest.mark.parametrize("change", MODEL_MUTATIONS.values(), ids=MODEL_MUTATIONS)
def test_key_sensitive_to_upstream(change):
    """Changing the weakest rung changes the transfers it teaches (through the upstream key)
    although the student's own GT run is the same."""
    raw = base_raw()
    raw["models"][0].update(change)
    before, after = base_keys(), keyed(raw)
    for place in before:
        touches = place[2] == 0  # gt of rung 0, or a transfer whose weak model is rung 0
        assert (before[place] != after[place]) == touches, place


def test_transfer_key_sensitive_to_loss_and_each_loss_param():
    base = base_keys()

    # A different loss for method 0 (no params) changes its transfers, not the GT runs.
    raw = base_raw()
    raw["methods"][0]["loss"] = "kl"
    after = keyed(raw)
    for place in base:
        changed = base[place] != after[place]
        assert changed == (place[0] == "transfer" and place[4] == 0), place

    # Each loss parameter: only method 1's transfers change.
    for param, value in (("alpha_max", [0.6, 0.8]), ("warmup_frac", 0.3)):
        raw = base_raw()
        raw["methods"][1]["params"][param] = value
        before_vals = {k for p, k in base.items() if p[0] == "transfer" and p[4] == 1}
        after = keyed(raw)
        after_vals = {k for p, k in after.items() if p[0] == "transfer" and p[4] == 1}
        assert len(after_vals) == 6 and not before_vals & after_vals, param
        unchanged = {p: k for p, k in base.items() if not (p[0] == "transfer" and p[4] == 1)}
        assert all(after[p] == k for p, k in unchanged.items()), param

    # Grid points of one method have distinct keys.
    alpha = {}
    for p, k in base.items():
        if p[0] == "transfer" and p[4] == 1:
            alpha.setdefault(json.loads(p[5])["alpha_max"], set()).add(k)
    assert set(alpha) == {0.5, 0.75} and not alpha[0.5] & alpha[0.75]


# ------------------------------------------------------------------------------------------------
# Insensitivity: names and resources do not change keys


def test_key_insensitive_to_model_and_method_names():
    raw = base_raw()
    for i, m in enumerate(raw["models"]):
        m["name"] = f"rung{i}"
    raw["methods"][0]["name"] = "plain"
    raw["methods"][1]["name"] = "confident"
    raw["name"] = "renamed-sweep"
    assert keyed(raw) == base_keys()


RESOURCE_MUTATIONS = {
    "workers": lambda r: r["resources"].update(workers=2),
    "zero_stage": lambda r: r["resources"].update(zero_stage=3),
    "offload": lambda r: r["resources"].update(offload=True),
    "cpus": lambda r: r["resources"].update(cpus_per_worker=2),  # gpus: see dtype auto below
    "max_failures": lambda r: r["resources"].update(max_failures=3),
    "per-model resources": lambda r: r["models"][1].update(
        resources={"workers": 4, "zero_stage": 2}
    ),
    "max_concurrent_trials": lambda r: r.update(max_concurrent_trials=1),
    "storage": lambda r: r.update(storage="/elsewhere"),
}


@pytest.mark.parametrize("mutate", RESOURCE_MUTATIONS.values(), ids=RESOURCE_MUTATIONS)
def test_key_insensitive_to_resources(mutate):
    raw = base_raw()
    mutate(raw)
    assert keyed(raw) == base_keys()


def test_dtype_auto_keys_the_device_class_that_decides_the_precision():
    """``dtype: auto`` trains in bf16 on a GPU that has it and in fp32 on CPU: a CPU result must
    not be reused for a GPU run of the same spec (or the reverse). The device class is keyed
    only then: how many GPUs, or which share of one, still does not change a key, and CPU runs
    keep the keys they had."""
    cpu = base_keys()
    gpu_raw = base_raw()
    gpu_raw["resources"].update(gpus_per_worker=1)
    gpu = keyed(gpu_raw)
    assert gpu.keys() == cpu.keys() and not set(gpu.values()) & set(cpu.values())
    for share in ({"gpus_per_worker": 0.25}, {"gpus_per_worker": 2, "workers": 2}):
        raw = base_raw()
        raw["resources"].update(share)
        assert keyed(raw) == gpu
    fp32 = base_raw()
    fp32["train"]["dtype"] = "fp32"
    assert set(keyed(fp32).values()) != set(cpu.values())  # dtype is keyed, as before
    fp32["resources"].update(gpus_per_worker=1)
    fp32_cpu = base_raw()
    fp32_cpu["train"]["dtype"] = "fp32"
    assert keyed(fp32) == keyed(fp32_cpu)


def test_dtype_auto_on_gpu_keys_pretraining_and_features_runs_too():
    """Pretraining always trains with dtype auto, and a features run embeds in the dtype its
    probes name: on a GPU both key the device; a probe itself trains on CPU."""
    raw = base_raw()
    pre = {"corpus": {"dataset": "synthetic", "n": 64, "seed": 1}, "steps": 2}
    raw["models"][0]["pretrain"] = pre
    raw["models"][1]["train"] = {"probe": {"head": "logreg"}}
    gpu_raw = copy.deepcopy(raw)
    gpu_raw["resources"].update(gpus_per_worker=1)
    cpu, gpu = plan_of(raw), plan_of(gpu_raw)
    assert cpu.pretrain[0].key != gpu.pretrain[0].key
    assert cpu.features[0].key != gpu.features[0].key
    assert {r.resources.gpus_per_worker for r in gpu.gt if r.features} == {0.0}


def test_resources_still_carried_on_run():
    raw = base_raw()
    raw["models"][1]["resources"] = {"workers": 4, "zero_stage": 2}
    plan = plan_of(raw)
    by_model = {r.model.name: r for r in plan.gt}
    assert by_model["w2s-tiny-2"].resources.workers == 4
    assert by_model["w2s-tiny-2"].resources.zero_stage == 2
    assert by_model["w2s-tiny-1"].resources.workers == 1


# ------------------------------------------------------------------------------------------------
# Plan shape


@pytest.fixture
def second_dataset(monkeypatch):
    syn = DATASETS["synthetic"]
    monkeypatch.setitem(
        DATASETS, "synthetic_b", DatasetEntry("synthetic_b", syn.load, "test copy", syn.params)
    )
    return "synthetic_b"


@pytest.mark.parametrize("n_methods", [1, 2, 3])
@pytest.mark.parametrize("n_models", [2, 3, 4])
def test_gt_count_and_transfer_count(second_dataset, n_methods, n_models):
    raw = base_raw()
    raw["datasets"].append({"name": second_dataset, "n_gt": 20, "n_weak": 20, "n_test": 10})
    raw["models"] = [f"w2s-tiny-{i}" for i in range(1, n_models + 1)]
    methods = [
        {"name": "naive", "loss": "xent"},
        {"name": "aux", "loss": "logconf", "params": {"alpha_max": [0.25, 0.5, 0.75]}},
        {"name": "kl", "loss": "kl"},
    ]
    raw["methods"] = methods[:n_methods]
    raw["seeds"] = [0, 1]
    plan = plan_of(raw)
    assert len(plan.gt) == 2 * n_models * 2  # datasets x models x seeds, however many methods
    variants = [1, 3, 1][:n_methods]
    pairs = n_models * (n_models - 1) // 2
    assert len(plan.transfer) == 2 * 2 * pairs * sum(variants)
    assert [s for s, _ in plan.stages] == ["gt", "transfer"]
    assert all(r.kind == "gt" and r.loss == "xent" and r.upstream == () for r in plan.gt)
    assert all(r.kind == "transfer" and len(r.upstream) == 1 for r in plan.transfer)


def test_transfers_point_at_weak_and_ceiling_and_follow_ladder(second_dataset):
    raw = base_raw()
    raw["datasets"].append({"name": second_dataset, "n_gt": 20, "n_weak": 20, "n_test": 10})
    # Names deliberately not in sorted order, so ladder order differs from alphabetical.
    raw["models"] = [
        {"name": "zeta", "source": "w2s-tiny-1"},
        {"name": "alpha", "source": "w2s-tiny-2"},
        {"name": "mid", "source": "w2s-tiny-3"},
        {"name": "beta", "source": "w2s-tiny-4"},
    ]
    raw["seeds"] = [3, 7]
    spec = parse_spec(raw, "mem.yaml")
    plan = plan_sweep(spec)
    order = [m.name for m in spec.models]
    gt = {(r.dataset.name, r.model.name, r.seed): r for r in plan.gt}
    assert len(gt) == len(plan.gt)
    seen_pairs = set()
    for r in plan.transfer:
        weak, strong = r.weak_model, r.model.name
        assert order.index(weak) < order.index(strong)
        weak_gt = gt[(r.dataset.name, weak, r.seed)]
        ceiling = gt[(r.dataset.name, strong, r.seed)]
        assert r.upstream == (weak_gt.key,)
        assert r.ceiling_key == ceiling.key
        assert r.model == ceiling.model and r.train == ceiling.train
        assert r.dataset == weak_gt.dataset == ceiling.dataset
        row = r.describe()
        assert row["weak_key"] == weak_gt.key and row["ceiling_key"] == ceiling.key
        seen_pairs.add((weak, strong))
    assert seen_pairs == set(combinations(order, 2))


def test_manifest_rows(tmp_path):
    spec = parse_spec(base_raw(), "mem.yaml")
    plan = plan_sweep(spec)
    man = manifest(spec, plan)
    assert man["ladder"] == LADDER
    assert man["datasets"] == ["synthetic"]
    assert [row["key"] for row in man["runs"]] == [r.key for r in plan.all_runs()]
    variants = {row["variant"] for row in man["runs"] if row["kind"] == "transfer"}
    assert variants == {
        "naive",
        "aux(alpha_max=0.5,warmup_frac=0.2)",
        "aux(alpha_max=0.75,warmup_frac=0.2)",
    }
    json.dumps(man)  # serialisable as is


def test_numbers_written_differently_give_the_same_key():
    """YAML reads 1e-3 as a string and 3 as an int: both must mean the float, one key."""
    a = base_raw()
    a["train"] = {**a.get("train", {}), "epochs": 3, "lr": "1e-3"}
    a["methods"] = [{"name": "logconf", "loss": "logconf", "params": {"alpha_max": 1}}]
    b = copy.deepcopy(a)
    b["train"].update(epochs=3.0, lr=0.001)
    b["methods"][0]["params"]["alpha_max"] = 1.0
    assert keyed(a) == keyed(b)
    run = plan_of(a).transfer[0]
    assert run.train.lr == 0.001 and isinstance(run.train.epochs, float)
    assert run.loss_params == {"alpha_max": 1.0}


def test_local_file_keyed_by_content_not_location(tmp_path, monkeypatch):
    """A local dataset's path is made absolute for the workers; its key follows the bytes."""
    rows = "".join(f'{{"text": "t{i}", "label": {i % 2}}}\n' for i in range(40))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "d.jsonl").write_text(rows)
    (tmp_path / "b" / "d.jsonl").write_text(rows)
    monkeypatch.chdir(tmp_path)

    def raw(path: str) -> dict:
        r = base_raw()
        r["datasets"] = [
            {"name": "local", "params": {"path": path}, "n_gt": 10, "n_weak": 10, "n_test": 10}
        ]
        return r

    run_a = plan_of(raw("a/d.jsonl")).gt[0]
    assert run_a.dataset.params["path"] == str(tmp_path / "a" / "d.jsonl")
    assert plan_of(raw("b/d.jsonl")).gt[0].key == run_a.key  # moved: same content, same key
    (tmp_path / "b" / "d.jsonl").write_text(rows.replace('"t3"', '"changed"'))
    assert plan_of(raw("b/d.jsonl")).gt[0].key != run_a.key  # edited: retrain
