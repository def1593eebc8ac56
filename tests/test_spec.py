"""Tests for w2sray.spec (load_spec / parse_spec) and the CLI's handling of bad specs.

Every bad spec is written to a real YAML file under tmp_path and must be rejected with a
SpecError whose message names the file and the exact field (``file: field: message``).
"""

from __future__ import annotations

import copy
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from w2sray import cli
from w2sray.spec import MethodSpec, SpecError, SweepSpec, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "sweeps" / "quickstart.yaml"


def base_spec(storage: str) -> dict:
    """A small valid spec (3-model built-in ladder, two methods, one of them a grid)."""
    return {
        "name": "unit",
        "storage": storage,
        "datasets": [{"name": "synthetic", "n_gt": 20, "n_weak": 20, "n_test": 10}],
        "models": ["w2s-tiny-1", "w2s-tiny-2", "w2s-tiny-3"],
        "methods": [
            {"name": "xent", "loss": "xent"},
            {"name": "logconf", "loss": "logconf", "params": {"alpha_max": [0.5, 0.75]}},
        ],
        "seeds": [0],
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.001},
        "resources": {"workers": 1, "zero_stage": 1},
    }


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def problem_for(exc: SpecError, field: str) -> str:
    """The message of the problem reported for exactly ``field`` (fails if there is none)."""
    found = [p.split(": ", 1)[1] for p in exc.problems if p.split(": ", 1)[0] == field]
    assert found, f"no problem for field {field!r}; problems: {exc.problems}"
    return "\n".join(found)


# ------------------------------------------------------------------------------------------------
# Good specs


def test_quickstart_loads():
    spec = load_spec(QUICKSTART)
    assert isinstance(spec, SweepSpec)
    assert spec.name == "quickstart"
    assert spec.storage == "w2s_results/quickstart"
    assert spec.source_path == str(QUICKSTART)
    assert [m.name for m in spec.models] == ["w2s-tiny-1", "w2s-tiny-2", "w2s-tiny-3"]
    # A bare model name is also its source.
    assert [m.source for m in spec.models] == ["w2s-tiny-1", "w2s-tiny-2", "w2s-tiny-3"]
    assert [m.name for m in spec.methods] == ["xent", "logconf"]
    assert spec.seeds == (0,)
    (ds,) = spec.datasets
    assert (ds.name, ds.n_gt, ds.n_weak, ds.n_test) == ("latent", 3000, 3000, 2000)
    # Every rung pretrains on one corpus of the task (a YAML anchor, merged into tiny-3's
    # longer recipe), on another seed than the splits'.
    pre = spec.models[0].pretrain
    assert [m.pretrain.steps for m in spec.models] == [3000, 3000, 4500]
    assert all(replace(m.pretrain, steps=pre.steps) == pre for m in spec.models)
    assert pre.corpus.dataset == "latent" and pre.corpus.seed != ds.split_seed
    assert pre.corpus.params == ds.params and ds.params["n_facets"] == 3
    assert [spec.train_for(m).epochs for m in spec.models] == [4, 2, 3]
    assert spec.train.epochs == 2
    assert spec.train.max_length == 32
    assert spec.resources.zero_stage == 1


def test_list_hyperparameter_expands_to_grid():
    spec = load_spec(QUICKSTART)
    assert spec.methods[1].variants() == [{"alpha_max": 0.5, "warmup_frac": 0.2}]
    grid = MethodSpec("logconf", "logconf", {"alpha_max": [0.5, 0.75], "warmup_frac": 0.2})
    assert grid.variants() == [
        {"alpha_max": 0.5, "warmup_frac": 0.2},
        {"alpha_max": 0.75, "warmup_frac": 0.2},
    ]
    assert spec.methods[0].variants() == [{}]
    two_axes = MethodSpec("m", "logconf", {"warmup_frac": [0.0, 0.1, 0.2], "alpha_max": [0.5, 1]})
    variants = two_axes.variants()
    assert len(variants) == 6
    assert {(v["alpha_max"], v["warmup_frac"]) for v in variants} == {
        (a, w) for a in (0.5, 1) for w in (0.0, 0.1, 0.2)
    }
    assert all(list(v) == ["alpha_max", "warmup_frac"] for v in variants)  # sorted keys


def test_store_override(tmp_path):
    target = str(tmp_path / "elsewhere")
    spec = load_spec(QUICKSTART, storage_override=target)
    assert spec.storage == target
    # --store also supplies a storage a spec lacks.
    raw = base_spec("x")
    del raw["storage"]
    path = write_yaml(tmp_path / "nostore.yaml", raw)
    with pytest.raises(SpecError) as ei:
        load_spec(path)
    assert "required" in problem_for(ei.value, "storage")
    assert load_spec(path, storage_override=target).storage == target


def test_precision_and_checkpointing_settings(tmp_path):
    spec = parse_spec(base_spec(str(tmp_path / "s")))
    assert spec.train.dtype == "auto" and spec.train.gradient_checkpointing is False
    raw = base_spec(str(tmp_path / "s"))
    raw["train"].update(dtype="fp32")
    raw["models"][2] = {
        "name": "w2s-tiny-3",
        "train": {"dtype": "bf16", "gradient_checkpointing": True},
    }
    spec = parse_spec(raw)
    assert spec.train.dtype == "fp32"
    big = spec.train_for(spec.models[2])
    assert big.dtype == "bf16" and big.gradient_checkpointing is True
    assert spec.train_for(spec.models[0]).dtype == "fp32"


@pytest.mark.parametrize("gpus", [0, 0.0001, 0.25, 1 / 3, "0.5", 1, 2, 8.0])
def test_gpu_shares_accepted(tmp_path, gpus):
    """A fraction of one GPU (one worker) or whole GPUs (any workers) validate; a fraction is
    kept as written (YAML's string floats included), whole numbers become floats."""
    raw = base_spec(str(tmp_path / "store"))
    raw["resources"]["gpus_per_worker"] = gpus
    if float(gpus) >= 1:
        raw["resources"]["workers"] = 2
    spec = load_spec(write_yaml(tmp_path / "ok.yaml", raw))
    assert all(spec.resources_for(m).gpus_per_worker == float(gpus) for m in spec.models)


@pytest.mark.parametrize("command", ["run", "plan"])
def test_cli_rejects_gpu_one_and_a_half_with_exit_2(tmp_path, capsys, command):
    raw = base_spec(str(tmp_path / "store"))
    raw["resources"]["gpus_per_worker"] = 1.5
    path = write_yaml(tmp_path / "bad.yaml", raw)
    assert cli.main([command, str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: resources.gpus_per_worker: must be a fraction in (0, 1]" in err
    assert not (tmp_path / "store").exists()


def test_resolve_bf16():
    from w2sray.train.zero import resolve_bf16

    # auto: bf16 only on a bf16-capable GPU, never on CPU
    assert resolve_bf16("auto", gpu=True, gpu_bf16=True) is True
    assert resolve_bf16("auto", gpu=True, gpu_bf16=False) is False
    assert resolve_bf16("auto", gpu=False, gpu_bf16=False) is False
    assert resolve_bf16("fp32", gpu=True, gpu_bf16=True) is False
    assert resolve_bf16("bf16", gpu=False, gpu_bf16=False) is True  # allowed on CPU (slow)
    assert resolve_bf16("bf16", gpu=True, gpu_bf16=True) is True
    with pytest.raises(ValueError, match="does not support bf16"):
        resolve_bf16("bf16", gpu=True, gpu_bf16=False)
    with pytest.raises(ValueError, match="must be auto, fp32 or bf16"):
        resolve_bf16("fp16", gpu=True, gpu_bf16=True)


def test_plan_cli_store_override_and_no_ray(tmp_path, capsys):
    store = tmp_path / "store"
    path = write_yaml(tmp_path / "ok.yaml", base_spec(str(tmp_path / "spec_store")))
    assert cli.main(["plan", str(path), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"store {store}" in out
    # 3 GT runs, 3 pairs x 3 variants = 9 transfers, nothing done.
    assert "12 runs: 3 ground-truth" in out and "9 transfers" in out and "12 to run" in out
    # plan reads the store, it creates nothing (neither the override nor the spec's storage).
    assert not store.exists()
    assert not (tmp_path / "spec_store").exists()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


# ------------------------------------------------------------------------------------------------
# Bad specs: (id, mutation of the base spec, exact field, message fragment)


def _set(*path_and_value):
    *path, value = path_and_value

    def mutate(raw: dict, tmp: Path) -> None:
        node = raw
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value(tmp) if callable(value) else value

    return mutate


def _del(key):
    def mutate(raw: dict, tmp: Path) -> None:
        del raw[key]

    return mutate


def _dir_without_config(tmp: Path) -> str:
    d = tmp / "empty_model"
    d.mkdir()
    return str(d)


BAD = [
    (
        "missing-local-model",
        _set("models", 1, lambda tmp: str(tmp / "no_such_model")),
        "models[1].source",
        "does not exist",
    ),
    (
        "model-dir-without-config",
        _set("models", 1, _dir_without_config),
        "models[1].source",
        "has no config.json",
    ),
    (
        "unknown-builtin",
        _set("models", 2, "w2s-tiny-9"),
        "models[2].source",
        "unknown built-in model 'w2s-tiny-9'",
    ),
    (
        "alpha-max-out-of-range",
        _set("methods", 1, "params", "alpha_max", [0.5, 1.5]),
        "methods[1].params",
        "parameter 'alpha_max' = 1.5 must be in [0.0, 1.0]",
    ),
    (
        "unknown-loss-param",
        _set("methods", 1, "params", "beta", 1.0),
        "methods[1].params",
        "unknown parameter 'beta'",
    ),
    (
        "empty-grid",
        _set("methods", 1, "params", "alpha_max", []),
        "methods[1].params.alpha_max",
        "an empty list gives no grid points",
    ),
    (
        "unknown-loss",
        _set("methods", 0, "loss", "nosuchloss"),
        "methods[0].loss",
        "unknown loss 'nosuchloss'",
    ),
    ("negative-lr", _set("train", "lr", -0.1), "train.lr", "must be > 0"),
    ("string-lr", _set("train", "lr", "fast"), "train.lr", "must be float, got 'fast'"),
    ("unknown-train-key", _set("train", "lrr", 0.1), "train.lrr", "unknown field"),
    (
        "zero-stage-4",
        _set("resources", "zero_stage", 4),
        "resources.zero_stage",
        "must be 0, 1, 2 or 3, got 4",
    ),
    ("bad-dtype", _set("train", "dtype", "fp16"), "train.dtype", "must be auto, fp32 or bf16"),
    (
        "bad-model-dtype",
        _set("models", 1, {"name": "w2s-tiny-2", "train": {"dtype": "bfloat16"}}),
        "models[1].train.dtype",
        "must be auto, fp32 or bf16, got 'bfloat16'",
    ),
    (
        "gradient-checkpointing-not-bool",
        _set("train", "gradient_checkpointing", "yes"),
        "train.gradient_checkpointing",
        "must be bool",
    ),
    (
        "offload-stage-0",
        lambda raw, tmp: raw["resources"].update(zero_stage=0, offload=True),
        "resources.offload",
        "needs zero_stage >= 1",
    ),
    (
        "batch-not-divisible",
        _set("resources", "workers", 3),
        "resources.workers",
        "batch_size 8 is not divisible by 3 workers",
    ),
    (
        "model-override-not-divisible",
        _set("models", 2, {"name": "big", "source": "w2s-tiny-3", "resources": {"workers": 3}}),
        "models[2].resources.workers",
        "batch_size 8 is not divisible by 3 workers",
    ),
    (
        "gpus-one-and-a-half",
        _set("resources", "gpus_per_worker", 1.5),
        "resources.gpus_per_worker",
        "must be a fraction in (0, 1] or a whole number of GPUs, got 1.5",
    ),
    (
        "gpus-below-ray-granularity",
        _set("resources", "gpus_per_worker", 0.00001),
        "resources.gpus_per_worker",
        "must be at least 0.0001",
    ),
    (
        "gpu-fraction-with-two-workers",
        lambda raw, tmp: raw["resources"].update(workers=2, gpus_per_worker=0.25),
        "resources.gpus_per_worker",
        "a fraction of a GPU (0.25) needs workers: 1, got 2",
    ),
    (
        "model-workers-on-a-gpu-fraction",
        lambda raw, tmp: (
            raw["resources"].update(gpus_per_worker=0.5),
            raw["models"].__setitem__(2, {"name": "w2s-tiny-3", "resources": {"workers": 2}}),
        ),
        "models[2].resources.gpus_per_worker",
        "NCCL refuses two ranks of one process group",
    ),
    (
        "unknown-dataset",
        _set("datasets", 0, "name", "imdbb"),
        "datasets[0].name",
        "unknown dataset 'imdbb'",
    ),
    (
        "unknown-dataset-param",
        _set("datasets", 0, "params", {"p_nott": 0.5}),
        "datasets[0].params",
        "unknown parameter 'p_nott'",
    ),
    ("split-too-small", _set("datasets", 0, "n_test", 1), "datasets[0].n_test", "must be >= 2"),
    (
        "unknown-top-level",
        _set("epochs", 3),
        "epochs",
        "unknown field",
    ),
    ("missing-name", _del("name"), "name", "required: a non-empty string"),
    ("bad-name", _set("name", "a b/c"), "name", "may hold only letters"),
    (
        "duplicate-model-names",
        _set("models", 1, {"name": "w2s-tiny-1", "source": "w2s-tiny-2"}),
        "models[1].name",
        "duplicate name 'w2s-tiny-1'",
    ),
    (
        "duplicate-method-names",
        _set("methods", 1, "name", "xent"),
        "methods[1].name",
        "duplicate name 'xent'",
    ),
    (
        "bad-pooling",
        _set("models", 0, {"name": "w2s-tiny-1", "pooling": "max"}),
        "models[0].pooling",
        "must be auto, last, first or mean",
    ),
    ("one-model", _set("models", ["w2s-tiny-1"]), "models", "at least 2 models"),
    ("seeds-not-ints", _set("seeds", [0, "one"]), "seeds", "non-empty list of integers"),
    ("seeds-float", _set("seeds", [0, 1.5]), "seeds", "non-empty list of integers"),
    ("seeds-repeated", _set("seeds", [1, 1]), "seeds", "repeated seed"),
    ("no-methods", _set("methods", []), "methods", "required: a non-empty list"),
    (
        "max-concurrent-zero",
        _set("max_concurrent_trials", 0),
        "max_concurrent_trials",
        "must be a positive integer",
    ),
]


@pytest.mark.parametrize("mutate,field,fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_spec_names_file_and_field(tmp_path, mutate, field, fragment):
    raw = base_spec(str(tmp_path / "store"))
    mutate(raw, tmp_path)
    path = write_yaml(tmp_path / "bad.yaml", raw)
    with pytest.raises(SpecError) as ei:
        load_spec(path)
    exc = ei.value
    assert exc.path == str(path)
    assert fragment in problem_for(exc, field)
    assert all(": " in p for p in exc.problems)
    # The rendered message prefixes every problem with the file, then the field.
    assert f"{path}: {field}: " in str(exc)
    assert all(line.startswith(f"{path}: ") for line in str(exc).splitlines())


def test_bad_yaml_syntax(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodels: [w2s-tiny-1, w2s-tiny-2\nseeds: {0\n")
    with pytest.raises(SpecError) as ei:
        load_spec(path)
    assert len(ei.value.problems) == 1
    assert str(ei.value).startswith(f"{path}: not valid YAML")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as ei:
        load_spec(path)
    assert str(ei.value) == f"{path}: file not found"


def test_top_level_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(SpecError) as ei:
        load_spec(path)
    assert "must be a mapping" in problem_for(ei.value, "(top level)")


def test_all_problems_collected_in_one_error(tmp_path):
    raw = base_spec(str(tmp_path / "store"))
    del raw["name"]
    raw["bogus"] = 1
    raw["train"]["lr"] = 0
    raw["resources"]["zero_stage"] = 7
    raw["models"][1] = str(tmp_path / "missing_model")
    raw["methods"][1]["params"]["alpha_max"] = 2.0
    raw["seeds"] = ["a"]
    path = write_yaml(tmp_path / "many.yaml", raw)
    with pytest.raises(SpecError) as ei:
        load_spec(path)
    fields = [p.split(": ", 1)[0] for p in ei.value.problems]
    expected = [
        "bogus",
        "name",
        "train.lr",
        "resources.zero_stage",
        "models[1].source",
        "methods[1].params",
        "seeds",
    ]
    for f in expected:
        assert f in fields, (f, ei.value.problems)
    assert len(str(ei.value).splitlines()) == len(ei.value.problems) >= len(expected)


def test_grid_problem_reported_once(tmp_path):
    raw = base_spec(str(tmp_path / "store"))
    raw["methods"][1]["params"] = {"alpha_max": [1.5, 0.5], "warmup_frac": [0.1, 0.2, 0.3]}
    with pytest.raises(SpecError) as ei:
        parse_spec(raw, "mem.yaml")
    bad = [p for p in ei.value.problems if "alpha_max" in p]
    assert len(bad) == 1, ei.value.problems


def test_parse_spec_does_not_mutate_input(tmp_path):
    raw = base_spec(str(tmp_path / "store"))
    before = copy.deepcopy(raw)
    parse_spec(raw, "mem.yaml")
    assert raw == before


# ------------------------------------------------------------------------------------------------
# CLI: a bad spec exits 2, prints to stderr and touches no store


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _bad_spec_file(tmp_path: Path, storage: Path) -> Path:
    raw = base_spec(str(storage))
    raw["resources"]["zero_stage"] = 5
    raw["models"][1] = str(tmp_path / "missing_model")
    return write_yaml(tmp_path / "bad.yaml", raw)


@pytest.mark.parametrize("command", ["run", "plan"])
def test_cli_bad_spec_exits_2_and_creates_no_store(tmp_path, capsys, command):
    storage = tmp_path / "new_store"
    path = _bad_spec_file(tmp_path, storage)
    assert cli.main([command, str(path)]) == 2
    captured = capsys.readouterr()
    assert "invalid sweep spec" in captured.err
    assert f"{path}: resources.zero_stage: " in captured.err
    assert f"{path}: models[1].source: " in captured.err
    assert captured.out == ""
    assert not storage.exists()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


@pytest.mark.parametrize("command", ["run", "plan"])
def test_cli_bad_spec_leaves_existing_store_untouched(tmp_path, capsys, command):
    storage = tmp_path / "old_store"
    (storage / "runs" / "gt-abc").mkdir(parents=True)
    (storage / "runs" / "gt-abc" / "metrics.json").write_bytes(b'{"acc": 0.75}\n')
    (storage / "sweeps").mkdir()
    (storage / "sweeps" / "unit.json").write_bytes(b"\x00\x01manifest")
    before = snapshot(storage)
    dirs_before = sorted(str(p) for p in storage.rglob("*"))
    path = _bad_spec_file(tmp_path, storage)
    assert cli.main([command, str(path)]) == 2
    assert "invalid sweep spec" in capsys.readouterr().err
    assert snapshot(storage) == before
    assert sorted(str(p) for p in storage.rglob("*")) == dirs_before


@pytest.mark.parametrize("command", ["run", "plan"])
def test_cli_bad_yaml_exits_2(tmp_path, capsys, command):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    assert cli.main([command, str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: not valid YAML" in err


def test_cli_storage_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_bytes(b"keep me")
    path = write_yaml(tmp_path / "ok.yaml", base_spec(str(target)))
    assert cli.main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: storage: " in err and "is not a directory" in err
    assert target.read_bytes() == b"keep me"
