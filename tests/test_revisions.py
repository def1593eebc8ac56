"""A hub model's run is keyed by the commit its revision points at (w2sray/models/revisions.py):
new weights pushed to a branch retrain, the workers load exactly the planned commit, and an
unresolvable revision is reported. The hub is not reachable here: these tests build a real
Hugging Face cache (refs + snapshots written by save_pretrained) and run offline."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import GPT2Config, GPT2Model

from w2sray.models import load_model
from w2sray.models.revisions import resolve_revision
from w2sray.runs import plan_sweep
from w2sray.spec import parse_spec

REPO = "w2s-test/tiny-gpt2"
SHA_A = "a" * 40
SHA_B = "b" * 40


def _snapshot(cache, sha: str, seed: int, ref: str = "main") -> None:
    """A cached commit ``sha`` of REPO (a tiny GPT-2 and a tokenizer), ``ref`` pointing at it."""
    from w2sray.data.tokenizer import build_synthetic_tokenizer

    root = cache / ("models--" + REPO.replace("/", "--"))
    torch.manual_seed(seed)
    tok = build_synthetic_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2)
    GPT2Model(cfg).save_pretrained(root / "snapshots" / sha)
    tok.save_pretrained(root / "snapshots" / sha)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(sha)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    # huggingface_hub reads both at import: set the module's values too
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _raw(revision: str | None = None) -> dict:
    hub = {"name": "hub", "source": REPO, "revision": revision}
    return {
        "name": "rev",
        "storage": "/unused",
        "datasets": [{"name": "synthetic", "n_gt": 64, "n_weak": 64, "n_test": 32}],
        "models": ["w2s-tiny-1", hub],
        "methods": ["xent"],
        "seeds": [0],
    }


def _hub_gt(raw: dict):
    return next(r for r in plan_sweep(parse_spec(raw)).gt if r.model.name == "hub")


def test_resolves_a_branch_from_the_cache_and_keeps_a_pinned_commit(hub_cache):
    _snapshot(hub_cache, SHA_A, seed=0)
    _snapshot(hub_cache, SHA_B, seed=1, ref="dev")
    assert resolve_revision(REPO, None) == resolve_revision(REPO, "main")
    assert (resolve_revision(REPO, None).commit, resolve_revision(REPO, None).via) == (
        SHA_A,
        "cache",
    )
    assert resolve_revision(REPO, "dev").commit == SHA_B
    assert (resolve_revision(REPO, SHA_B).commit, resolve_revision(REPO, SHA_B).via) == (
        SHA_B,
        "pinned",
    )
    assert resolve_revision("w2s-test/not-cached", None).via == "unresolved"


def test_new_weights_on_main_change_the_key_and_workers_load_the_planned_commit(hub_cache):
    _snapshot(hub_cache, SHA_A, seed=0)
    before = _hub_gt(_raw())
    assert before.model.commit == SHA_A
    # The same commit named by its sha is the same run: the key follows the weights.
    assert _hub_gt(_raw(SHA_A)).key == before.key
    # main moves to new weights: a new key (the old results are not reused for them)
    _snapshot(hub_cache, SHA_B, seed=1)
    after = _hub_gt(_raw())
    assert after.model.commit == SHA_B and after.key != before.key
    # What a worker loads is the planned commit, whatever main points at by then.
    a = load_model(REPO, seed=0, revision=before.model.load_revision).backbone
    b = load_model(REPO, seed=0, revision=after.model.load_revision).backbone
    w_a, w_b = a.wte.weight, b.wte.weight
    assert not torch.equal(w_a, w_b)
    ref = GPT2Model.from_pretrained(
        hub_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / SHA_A
    )
    assert torch.equal(w_a, ref.wte.weight)


def test_an_unresolvable_revision_is_keyed_by_name_and_reported(hub_cache, capsys):
    run = _hub_gt(_raw())  # nothing cached, hub offline
    assert run.model.commit is None
    assert _hub_gt(_raw()).key == run.key
    from w2sray.runs import unpinned_sources

    (line,) = unpinned_sources(plan_sweep(parse_spec(_raw())))
    assert REPO in line and "revision" in line


def test_builtin_and_local_models_are_not_resolved(hub_cache, tmp_path):
    raw = _raw()
    folder = tmp_path / "local"
    _snapshot(hub_cache, SHA_A, seed=0)
    snap = hub_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / SHA_A
    os.symlink(snap, folder)
    raw["models"] = ["w2s-tiny-1", {"name": "hub", "source": str(folder)}]
    run = _hub_gt(raw)
    assert run.model.commit is None and run.model.sha256
    tiny = next(r for r in plan_sweep(parse_spec(raw)).gt if r.model.name == "w2s-tiny-1")
    assert tiny.model.commit is None


def test_plan_warns_about_an_unresolved_hub_model(hub_cache, tmp_path, capsys):
    import yaml

    from w2sray.cli import main

    raw = {**_raw(), "storage": str(tmp_path / "store")}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    assert main(["plan", str(tmp_path / "spec.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"warning: model hub ({REPO}, revision main): not resolved" in out
    _snapshot(hub_cache, SHA_A, seed=0)  # now the cache knows main's commit
    assert main(["plan", str(tmp_path / "spec.yaml")]) == 0
    assert "warning: model hub" not in capsys.readouterr().out


# Hub datasets: keyed by the commit their revision points at, like hub models.
DS_REPO = "stanfordnlp/sst2"


def _ds_ref(cache, sha: str, ref: str = "main") -> None:
    refs = cache / ("datasets--" + DS_REPO.replace("/", "--")) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / ref).write_text(sha)


def _ds_raw(revision: str | None = None, corpus: bool = False) -> dict:
    ds = {"name": "sst2", "n_gt": 8, "n_weak": 8, "n_test": 8}
    if revision is not None:
        ds["params"] = {"revision": revision}
    model: dict | str = "w2s-tiny-1"
    if corpus:
        pre = {"corpus": {"dataset": "sst2", "n": 16, "seed": 1}, "steps": 2}
        model = {"name": "w2s-tiny-1", "source": "w2s-tiny-1", "pretrain": pre}
    return {
        "name": "dsrev",
        "storage": "/unused",
        "datasets": [ds],
        "models": [model, "w2s-tiny-2"],
        "methods": ["xent"],
        "seeds": [0],
    }


def _ds_gt(raw: dict):
    return plan_sweep(parse_spec(raw)).gt[0]


def test_a_hub_dataset_is_keyed_by_the_commit_its_revision_points_at(hub_cache):
    from w2sray.runs import unpinned_sources

    unresolved = _ds_gt(_ds_raw())
    assert unresolved.dataset.commit is None
    lines = unpinned_sources(plan_sweep(parse_spec(_ds_raw())))
    assert [line.startswith(f"dataset sst2 ({DS_REPO}, revision main)") for line in lines] == [True]
    _ds_ref(hub_cache, SHA_A)
    at_a = _ds_gt(_ds_raw())
    assert at_a.dataset.commit == SHA_A and at_a.key != unresolved.key
    assert not unpinned_sources(plan_sweep(parse_spec(_ds_raw())))
    # the same rows however the spec names them: main, or the commit itself
    assert _ds_gt(_ds_raw("main")).key == at_a.key
    assert _ds_gt(_ds_raw(SHA_A)).key == at_a.key
    _ds_ref(hub_cache, SHA_B)  # new rows pushed to main: the runs retrain
    assert _ds_gt(_ds_raw()).key not in (at_a.key, unresolved.key)
    assert _ds_gt(_ds_raw(SHA_A)).key == at_a.key  # a pinned commit does not move


def test_workers_load_the_planned_commit_of_a_hub_dataset_and_corpus(hub_cache, monkeypatch):
    from w2sray.data import hub as hub_mod
    from w2sray.data import run_splits
    from w2sray.data.corpus import load_corpus

    asked: list[tuple[str, str | None]] = []

    def fake(hub_id, split, revision=None, data_dir=None, config=None, dataset=""):
        asked.append((split, revision))
        return [{"idx": i, "sentence": f"{split} {i}", "label": i % 2} for i in range(40)]

    monkeypatch.setattr(hub_mod, "load_hub_rows", fake)
    _ds_ref(hub_cache, SHA_A)
    plan = plan_sweep(parse_spec(_ds_raw(corpus=True)))
    run_splits(plan.gt[0].dataset)
    assert asked and all(rev == SHA_A for _, rev in asked)
    (pre,) = plan.pretrain
    assert pre.dataset.commit == SHA_A
    asked.clear()
    assert len(load_corpus(pre.dataset)) == 16
    assert asked == [("train", SHA_A)]
