"""Run keys hash resolved settings: code defaults, registry versions, local model content."""

from __future__ import annotations

import copy
import inspect
import os
import shutil
from dataclasses import replace

import pytest

from w2sray import digests
from w2sray.data import DATASETS, dataset_defaults, resolved_dataset_params
from w2sray.losses import LOSSES, compute_loss, resolved_loss_params
from w2sray.runs import PART_VERSIONS, plan_sweep
from w2sray.spec import parse_spec


def quickstart_raw() -> dict:
    """The quickstart as it was before pretraining (the synthetic task, no pretraining), written
    here so that editing sweeps/quickstart.yaml changes nothing."""
    return {
        "name": "quickstart",
        "storage": "/unused",
        "datasets": [{"name": "synthetic", "n_gt": 6000, "n_weak": 6000, "n_test": 2000}],
        "models": ["w2s-tiny-1", "w2s-tiny-2", "w2s-tiny-3"],
        "methods": [
            {"name": "xent", "loss": "xent"},
            {
                "name": "logconf",
                "loss": "logconf",
                "params": {"alpha_max": 0.5, "warmup_frac": 0.2},
            },
        ],
        "seeds": [0],
        "train": {
            "epochs": 3,
            "batch_size": 32,
            "lr": 1.0e-3,
            "lr_warmup_frac": 0.1,
            "max_length": 32,
        },
        "resources": {"workers": 1, "cpus_per_worker": 1, "zero_stage": 1},
    }


# Updated deliberately, and only when a change is meant to change keys (old results of the
# quickstart are then retrained, not reused). A failure here otherwise means some code change
# silently altered what the keys hash.
GOLDEN_QUICKSTART_KEYS = [
    "gt-0d34d3847e0f565829b5",
    "gt-7661ac8f3c25efb48274",
    "gt-fffe4e501565e454ee2b",
    "transfer-27d2f80fe1527c2df09a",
    "transfer-29c61b633673fae5601c",
    "transfer-ad37edcd284fe8e0ae3e",
    "transfer-ca1328e17612aa2c4997",
    "transfer-e91adc1599b1e1da82c2",
    "transfer-f8aabdd57ccd4e308f21",
]


def test_golden_quickstart_keys():
    plan = plan_sweep(parse_spec(quickstart_raw(), "mem.yaml"))
    assert sorted(r.key for r in plan.all_runs()) == GOLDEN_QUICKSTART_KEYS


def pretrained_quickstart_raw() -> dict:
    """Mirrors sweeps/quickstart.yaml: the latent task (3 facets) with its pretraining stage and
    per-model pretraining steps and epochs."""
    raw = quickstart_raw()
    task = {"n_facets": 3, "label_rule": "majority", "n_topics": 6, "coherence": 0.97,
            "min_words": 24, "max_words": 32}  # fmt: skip
    raw["datasets"] = [
        {"name": "latent", "params": task, "n_gt": 3000, "n_weak": 3000, "n_test": 2000}
    ]
    recipe = {
        "corpus": {"dataset": "latent", "params": task, "n": 20000, "seed": 1},
        "steps": 3000,
        "lr": 3.0e-3,
        "batch_size": 32,
        "max_length": 32,
    }
    raw["models"] = [
        {"name": "w2s-tiny-1", "pretrain": recipe, "train": {"epochs": 4}},
        {"name": "w2s-tiny-2", "pretrain": recipe},
        {"name": "w2s-tiny-3", "pretrain": {**recipe, "steps": 4500}, "train": {"epochs": 3}},
    ]
    raw["train"] = {**raw["train"], "epochs": 2}
    return raw


# Changed deliberately when the quickstart moved to the 3-facet task (RESULTS 8d) and the latent
# entry registered n_facets and label_rule (which changed every latent key).
GOLDEN_PRETRAINED_QUICKSTART_KEYS = [
    "gt-73999a4303d5206f85b5",
    "gt-ac5096e116164effa109",
    "gt-dd34ceb9e23eec35a7df",
    "pretrain-a2c8f3d413dd68f72888",
    "pretrain-ab2110f12e2f6ce6e987",
    "pretrain-bb8c39ac9c496820056c",
    "transfer-0d3d3e80f111f5674cf0",
    "transfer-0f3dbc86b0ed95848df0",
    "transfer-7317eb6b666e5a7c5edb",
    "transfer-b3535c953db7f68a4b61",
    "transfer-c2495b0bd2f0890a5af8",
    "transfer-f548b25eca61b4fca1f6",
]


def test_golden_pretrained_quickstart_keys():
    plan = plan_sweep(parse_spec(pretrained_quickstart_raw(), "mem.yaml"))
    assert sorted(r.key for r in plan.all_runs()) == GOLDEN_PRETRAINED_QUICKSTART_KEYS
    assert len(plan.pretrain) == 3


# ------------------------------------------------------------------------------------------------
# Defaults and versions: a change alters exactly the keys that rely on it


@pytest.fixture
def two_datasets(monkeypatch):
    """A second registry entry loading the same task, to see which keys a change leaves."""
    monkeypatch.setitem(DATASETS, "synthetic_b", replace(DATASETS["synthetic"], name="synthetic_b"))


def mixed_raw() -> dict:
    """Two datasets, logconf leaving warmup_frac to its default, and a generative method."""
    raw = quickstart_raw()
    raw["datasets"].append({"name": "synthetic_b", "n_gt": 60, "n_weak": 60, "n_test": 20})
    raw["methods"][1]["params"] = {"alpha_max": 0.5}
    raw["methods"].append({"name": "gen", "loss": "xent", "generative": True})
    return raw


def places(raw: dict) -> dict[tuple, str]:
    """Every run's key by (kind, dataset, weak, model, method, seed)."""
    plan = plan_sweep(parse_spec(copy.deepcopy(raw), "mem.yaml"))
    out = {}
    for r in plan.all_runs():
        method = r.method if r.kind != "gt" else "gt"
        place = (r.kind, r.dataset.name, r.weak_model, r.model.name, method, r.seed)
        assert place not in out
        out[place] = r.key
    return out


def changed(before: dict[tuple, str], after: dict[tuple, str]) -> set[tuple]:
    assert before.keys() == after.keys()
    return {p for p in before if before[p] != after[p]}


def is_transfer(method: str):
    return lambda p: p[0] == "transfer" and p[4] == method


def on_dataset(name: str):
    return lambda p: p[1] == name


def expect(before: dict, after: dict, pred) -> None:
    want = {p for p in before if pred(p)}
    assert want, "the change must touch some runs"
    assert changed(before, after) == want


def test_loss_default_changes_only_runs_relying_on_it(two_datasets, monkeypatch):
    before = places(mixed_raw())
    spec = LOSSES["logconf"]
    monkeypatch.setitem(
        LOSSES, "logconf", replace(spec, defaults={**spec.defaults, "warmup_frac": 0.3})
    )
    expect(before, places(mixed_raw()), is_transfer("logconf"))
    # The quickstart writes warmup_frac itself: its keys do not depend on the default.
    monkeypatch.setitem(LOSSES, "logconf", spec)
    qs = places(quickstart_raw())
    monkeypatch.setitem(
        LOSSES, "logconf", replace(spec, defaults={**spec.defaults, "warmup_frac": 0.3})
    )
    assert places(quickstart_raw()) == qs


def test_declared_dataset_default_changes_only_that_dataset(two_datasets, monkeypatch):
    before = places(mixed_raw())
    entry = DATASETS["synthetic"]
    monkeypatch.setitem(
        DATASETS, "synthetic", replace(entry, defaults={**entry.defaults, "p_but": 0.1})
    )
    expect(before, places(mixed_raw()), on_dataset("synthetic"))


def hub_raw(params: dict) -> dict:
    raw = quickstart_raw()
    raw["datasets"] = [
        {"name": "sst2", "params": params, "n_gt": 60, "n_weak": 60, "n_test": 20},
        {"name": "sciq", "n_gt": 60, "n_weak": 60, "n_test": 20},
    ]
    return raw


def test_loader_signature_default_changes_only_that_dataset(monkeypatch):
    """A hub task's default split is its loader's keyword default, read when planning."""
    before = places(hub_raw({}))
    load = DATASETS["sst2"].load
    assert dataset_defaults("sst2")["split"] == "train"
    monkeypatch.setattr(
        load, "__defaults__", tuple("validation" if d == "train" else d for d in load.__defaults__)
    )
    assert dataset_defaults("sst2")["split"] == "validation"
    expect(before, places(hub_raw({})), on_dataset("sst2"))
    assert places(hub_raw({"split": "train"})) == before  # written: the default does not matter


@pytest.mark.parametrize(
    "bump, touched",
    [
        ("loss", is_transfer("logconf")),
        ("dataset", on_dataset("synthetic")),
        ("generative", is_transfer("gen")),
        ("transfer", lambda p: p[0] == "transfer"),
        ("gt", lambda p: True),  # a transfer's key holds its upstream GT run's key
    ],
)
def test_version_bump_changes_only_that_entrys_runs(two_datasets, monkeypatch, bump, touched):
    before = places(mixed_raw())
    if bump == "loss":
        monkeypatch.setitem(LOSSES, "logconf", replace(LOSSES["logconf"], version=2))
    elif bump == "dataset":
        monkeypatch.setitem(DATASETS, "synthetic", replace(DATASETS["synthetic"], version=2))
    else:
        monkeypatch.setitem(PART_VERSIONS, bump, 2)
    expect(before, places(mixed_raw()), touched)


def test_writing_a_default_gives_the_same_key(two_datasets):
    implicit = mixed_raw()
    explicit = mixed_raw()
    explicit["datasets"][0]["params"] = {"p_not": 0.5, "p_very": 0, "max_filler": 1}  # int 0
    explicit["methods"][1]["params"] = {"alpha_max": 0.5, "warmup_frac": 0.2}
    assert places(explicit) == places(implicit)
    explicit["datasets"][0]["params"]["p_very"] = 0.1
    assert changed(places(implicit), places(explicit)) == {
        p for p in places(implicit) if p[1] == "synthetic"
    }


def test_runs_carry_resolved_settings_and_workers_get_them():
    plan = plan_sweep(parse_spec(mixed_raw_one_dataset(), "mem.yaml"))
    lc = next(r for r in plan.transfer if r.method == "logconf")
    assert lc.dataset.params == dataset_defaults("synthetic")
    assert lc.loss_params == {"alpha_max": 0.5}  # as written: the display label stays short
    assert lc.variant == "logconf(alpha_max=0.5)"
    config = lc.to_config()
    assert config["loss_params"] == {"alpha_max": 0.5, "warmup_frac": 0.2}
    assert config["content"]["loss_params"] == config["loss_params"]


def mixed_raw_one_dataset() -> dict:
    raw = mixed_raw()
    raw["datasets"] = raw["datasets"][:1]
    return raw


def test_resolved_params_behave_as_omitted_ones():
    """Merging defaults when planning equals merging them in the worker: same loss, same data."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 2, generator=gen)
    targets = torch.softmax(torch.randn(16, 2, generator=gen), dim=-1)
    for name, spec in LOSSES.items():
        resolved = resolved_loss_params(name, {})
        assert resolved == spec.defaults
        for frac in (0.05, 0.5):
            a = compute_loss(name, logits, targets, frac, {})
            b = compute_loss(name, logits, targets, frac, resolved)
            assert torch.equal(a, b), name
    assert resolved_loss_params("logconf", {"alpha_max": 1}) == {
        "alpha_max": 1.0,
        "warmup_frac": 0.2,
    }
    from w2sray.data import make_splits

    params = resolved_dataset_params("synthetic", {"p_not": 0.4})
    a = make_splits("synthetic", params, 20, 20, 10, 0)
    b = make_splits("synthetic", {"p_not": 0.4}, 20, 20, 10, 0)
    assert (a.gt_texts, a.weak_labels, a.test_texts) == (b.gt_texts, b.weak_labels, b.test_texts)


def test_every_dataset_param_has_a_known_default():
    """A param without one would be hashed only when written: declare it (register_dataset's
    ``defaults``) when the loader takes it through **params."""
    for name, entry in DATASETS.items():
        sig = inspect.signature(entry.load).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values())
        # Params the loader receives (others, if any, are handled before it is called).
        loaded = {p for p in entry.params if takes_any or p in sig}
        missing = loaded - set(dataset_defaults(name))
        assert not missing, f"dataset {name!r}: no default for {sorted(missing)}"


# ------------------------------------------------------------------------------------------------
# A local model folder is keyed by its files, not its place


def make_model(folder) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "gpt2", "n_layer": 1}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / "tokenizer.json").write_text('{"vocab": {}}')
    (folder / "README.md").write_text("notes")
    (folder / ".hidden").write_text("x")


def local_raw(path) -> dict:
    raw = quickstart_raw()
    raw["models"] = ["w2s-tiny-1", {"name": "local", "source": str(path)}]
    return raw


def local_places(path) -> dict[tuple, str]:
    return places(local_raw(path))


def test_local_model_keyed_by_content_not_path(tmp_path, monkeypatch):
    monkeypatch.setenv("W2SRAY_CACHE_DIR", str(tmp_path / "cache"))
    a = tmp_path / "a" / "model"
    make_model(a)
    before = local_places(a)
    plan = plan_sweep(parse_spec(local_raw(a), "mem.yaml"))
    run = next(r for r in plan.gt if r.model.name == "local")
    assert run.model.source == str(a) and os.path.isabs(run.model.source)
    assert str(a) not in str(run.content()) and "source" not in run.content()["model"]
    # Moved (relative path from elsewhere): same key, and the run carries the new absolute path.
    b = tmp_path / "b" / "copy"
    shutil.copytree(a, b)
    monkeypatch.chdir(tmp_path)
    assert local_places("b/copy") == before
    run_b = next(
        r
        for r in plan_sweep(parse_spec(local_raw("b/copy"), "m.yaml")).gt
        if r.model.name == "local"
    )
    assert run_b.model.source == str(b)
    # Files that are not hashed (README, hidden) change nothing; one weight byte does.
    (b / "README.md").write_text("other notes")
    (b / ".hidden").write_text("y")
    assert local_places(b) == before
    data = bytearray((b / "model.safetensors").read_bytes())
    data[100] ^= 1
    (b / "model.safetensors").write_bytes(bytes(data))
    after = local_places(b)
    touched = {p for p in before if p[3] == "local"}  # its GT run and the transfer into it
    assert touched and changed(before, after) == touched
    # A renamed weight file changes the key too (names are hashed).
    os.rename(b / "model.safetensors", b / "model-00001.safetensors")
    assert local_places(b)[("gt", "synthetic", None, "local", "gt", 0)] not in (
        before[("gt", "synthetic", None, "local", "gt", 0)],
        after[("gt", "synthetic", None, "local", "gt", 0)],
    )


def test_digest_cache_reused_and_invalidated(tmp_path, monkeypatch):
    monkeypatch.setenv("W2SRAY_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "m"
    make_model(folder)
    reads: list[str] = []
    real = digests._hash_file

    def counting(path: str) -> str:
        reads.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(digests, "_hash_file", counting)
    first = digests.folder_digest(str(folder))
    assert sorted(reads) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert os.path.isfile(tmp_path / "cache" / "digests.json")
    reads.clear()
    assert digests.folder_digest(str(folder)) == first and reads == []  # from the cache
    # Same size, new mtime: read again (only that file), same digest.
    weights = folder / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert digests.folder_digest(str(folder)) == first and reads == ["model.safetensors"]
    reads.clear()
    # New size: read again, new digest.
    (folder / "tokenizer.json").write_text('{"vocab": {"a": 0}}')
    second = digests.folder_digest(str(folder))
    assert second != first and reads == ["tokenizer.json"]
    # A corrupt cache file is only a cache miss.
    (tmp_path / "cache" / "digests.json").write_text("{not json")
    reads.clear()
    assert digests.folder_digest(str(folder)) == second and len(reads) == 3


def test_digest_cache_location(tmp_path, monkeypatch):
    monkeypatch.delenv("W2SRAY_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert digests.cache_path() == str(tmp_path / "xdg" / "w2sray" / "digests.json")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert digests.cache_path() == str(tmp_path / "home" / ".cache" / "w2sray" / "digests.json")
    monkeypatch.setenv("W2SRAY_CACHE_DIR", str(tmp_path / "own"))
    assert digests.cache_path() == str(tmp_path / "own" / "digests.json")
