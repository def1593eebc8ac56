"""LoRA (``train.lora``, w2sray/models/lora.py): only adapters and head train, the spec's checks
and keys, the planner's count, a checkpoint without the frozen weights, and a ZeRO-3 run over
2 workers whose stored adapter, loaded back, gives the run's predictions."""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from w2sray.artifacts import TEST_PREDICTIONS
from w2sray.models import W2SClassifier, load_model
from w2sray.models.lora import (
    apply_lora,
    estimate_params,
    load_trainable_state,
    resolved,
    trainable_state,
)
from w2sray.runs import Plan, plan_sweep
from w2sray.spec import SpecError, parse_spec

CORPUS = ["good movie", "bad movie", "not good at all", "really great fun"] * 4


def _lora_classifier(source: str = "w2s-tiny-2", lora: dict | None = None, seed: int = 0):
    loaded = load_model(source, seed=seed, corpus=CORPUS)
    targets = apply_lora(loaded.backbone, lora or {"r": 4}, "gpt2")
    return W2SClassifier(loaded.backbone, loaded.pooling), loaded.tokenizer, targets


def _batch(tok):
    enc = tok(CORPUS[:4], padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_only_adapters_and_head_get_gradients():
    model, tok, targets = _lora_classifier()
    assert targets == ["c_attn", "c_proj"]  # the GPT-2 family's default
    ids, mask = _batch(tok)
    model(ids, mask).sum().backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    want = {n for n, p in model.named_parameters() if "lora_" in n or n.startswith("head.")}
    assert got == want and any("lora_B" in n for n in got) and "head.weight" in got
    assert all(not p.requires_grad for n, p in model.named_parameters() if n not in want)
    # every attention and MLP projection of both layers is adapted (c_proj names both)
    assert sum("lora_A" in n for n in want) == 2 * 3
    adapters = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert adapters == estimate_params("w2s-tiny", 48, 2, {"r": 4})  # the planner's count


def test_adapter_saved_and_loaded_back_gives_the_same_logits():
    model, tok, _ = _lora_classifier(seed=3)
    with torch.no_grad():  # "trained": adapters away from their zero-B init
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    ids, mask = _batch(tok)
    before = model(ids, mask)
    buf = io.BytesIO()
    torch.save(trainable_state(model), buf)
    state = torch.load(io.BytesIO(buf.getvalue()))
    assert set(state) == {n for n, p in model.named_parameters() if p.requires_grad}
    fresh, _, _ = _lora_classifier(seed=3)  # same base weights (seeded), fresh adapters
    assert not torch.allclose(fresh(ids, mask), before)
    load_trainable_state(fresh, state)
    assert torch.equal(fresh(ids, mask), before)
    with pytest.raises(ValueError, match="does not fit"):
        load_trainable_state(fresh, {k: v for k, v in state.items() if k != "head.bias"})


def test_unknown_target_module_is_an_error_naming_the_field():
    loaded = load_model("w2s-tiny-1", seed=0, corpus=CORPUS)
    with pytest.raises(ValueError, match="train.lora.target_modules"):
        apply_lora(loaded.backbone, {"target_modules": ["q_proj"]}, "gpt2")
    with pytest.raises(ValueError, match="no default for model type 'mamba'"):
        apply_lora(load_model("w2s-tiny-1", seed=0).backbone, {}, "mamba")


BASE = {
    "name": "lora",
    "storage": "unused",
    "datasets": [{"name": "synthetic", "n_gt": 64, "n_weak": 64, "n_test": 32}],
    "models": ["w2s-tiny-1", "w2s-tiny-2"],
    "methods": ["xent"],
    "train": {"epochs": 1, "batch_size": 16, "max_length": 24, "lora": {"r": 4}},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}


@pytest.mark.parametrize(
    "lora, field, words",
    [
        ({"r": 0}, "train.lora.r", ">= 1"),
        ({"r": 2.5}, "train.lora.r", "whole number"),
        ({"alpha": -1}, "train.lora.alpha", "> 0"),
        ({"dropout": 1.0}, "train.lora.dropout", "[0, 1)"),
        ({"target_modules": []}, "train.lora.target_modules", "non-empty list"),
        ({"target_modules": "c_attn"}, "train.lora.target_modules", "auto or"),
        ({"rank": 4}, "train.lora.rank", "unknown field"),
        ("yes", "train.lora", "must be dict"),
    ],
)
def test_bad_lora_names_the_field(lora, field, words):
    raw = copy.deepcopy(BASE)
    raw["train"]["lora"] = lora
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert any(field in p and words in p for p in err.value.problems), err.value.problems


def test_lora_with_generative_fine_tuning_is_refused():
    raw = copy.deepcopy(BASE)
    raw["methods"] = [{"name": "gen", "loss": "xent", "generative": {"epochs": 1}}]
    with pytest.raises(SpecError, match=r"methods\[0\].generative: .*train.lora"):
        parse_spec(raw)
    raw["models"] = ["w2s-tiny-1", {"name": "w2s-tiny-2", "train": {"lora": {"r": 2}}}]
    del raw["train"]["lora"]
    with pytest.raises(SpecError, match=r"train.lora \(set for w2s-tiny-2\)"):
        parse_spec(raw)


def test_run_keys_hold_the_resolved_lora_settings():
    def keys(lora):
        raw = copy.deepcopy(BASE)
        if lora is None:
            del raw["train"]["lora"]
        else:
            raw["train"]["lora"] = lora
        return [r.key for r in plan_sweep(parse_spec(raw)).all_runs()]

    written = {"r": 4, "alpha": 16, "dropout": 0.0, "target_modules": ["c_proj", "c_attn"]}
    assert keys({"r": 4}) == keys(written)  # defaults (and the family's targets) written or not
    for other in ({"r": 8}, {"r": 4, "alpha": 8}, {"r": 4, "dropout": 0.1}):
        assert keys(other) != keys({"r": 4})
    assert keys({"r": 4, "target_modules": ["c_attn"]}) != keys({"r": 4})
    off = keys(None)
    assert not set(off) & set(keys({"r": 4}))
    raw = copy.deepcopy(BASE)
    del raw["train"]["lora"]
    assert all("lora" not in r.train.as_dict() for r in plan_sweep(parse_spec(raw)).all_runs())
    (run,) = plan_sweep(parse_spec(BASE)).transfer
    assert run.train.lora == resolved(written)
    assert run.train.lora["target_modules"] == ["c_attn", "c_proj"]
    # a family the spec cannot tell (a hub id outside the table) keeps "auto" for the worker
    assert resolved({}, None)["target_modules"] == "auto"


def test_planner_counts_gradients_and_optimizer_for_trainable_params_only():
    from w2sray.plan_resources import memory_breakdown, plan_run

    args = dict(seq_len=64, micro_batch=8, hidden=4096, layers=32, grad_ckpt=True)
    p = 7_000_000_000
    t = estimate_params("llama3", 4096, 32, {"r": 8}) + 2 * 4096 + 2
    assert t == 8 * 8 * 4096 * 32 + 2 * 4096 + 2  # q, k, v, o: r * (h + h) each
    full = memory_breakdown(p, 2, 3, 2, False, **args)
    lora = memory_breakdown(p, 2, 3, 2, False, **args, trainable=t)
    assert lora.weights == full.weights == 2 * p // 2  # all weights, partitioned over 2
    assert lora.grads == 2 * t // 2 + (2 * t) % 2 and lora.optimizer == 12 * t // 2
    assert lora.gathered == full.gathered and lora.activations == full.activations
    small = plan_run(p, 80 * 2**30, 8, hidden=4096, layers=32, seq_len=64, batch_size=32,
                     grad_ckpt=True, trainable=t)  # fmt: skip
    assert small.fits and small.workers == 1 and small.zero_stage == 0  # 14 GB of weights


def test_plan_gpu_mem_prints_the_lora_count(tmp_path, capsys):
    import yaml

    from w2sray.cli import main

    raw = copy.deepcopy(BASE)
    raw["models"] = ["w2s-tiny-1", "Qwen/Qwen2.5-7B"]
    raw["storage"] = str(tmp_path / "store")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["plan", str(path), "--gpu-mem", "80", "--gpus-per-node", "8"]) == 0
    out = capsys.readouterr().out
    assert "Qwen/Qwen2.5-7B: 7.61B params" in out and "LoRA: 3.22M trainable" in out, out


CHECKPOINT_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch, deepspeed
    import torch.distributed as dist
    from w2sray.models import W2SClassifier, load_model
    from w2sray.models.lora import apply_lora
    from w2sray.train.zero import deepspeed_config

    def engine(seed):
        loaded = load_model("w2s-tiny-2", seed=seed, corpus=["good movie", "bad movie"] * 4)
        apply_lora(loaded.backbone, {"r": 4}, "gpt2")
        model = W2SClassifier(loaded.backbone, loaded.pooling)
        params = [p for p in model.parameters() if p.requires_grad]
        global N_TRAINABLE
        N_TRAINABLE = sum(p.numel() for p in params)  # before ZeRO-3 partitions them
        opt = torch.optim.AdamW(params, lr=1e-2)
        e, *_ = deepspeed.initialize(model=model, optimizer=opt,
                                     config=deepspeed_config(4, 1, 3, 1.0, False, gpu=False))
        return e, loaded.tokenizer

    e, tok = engine(0)
    enc = tok(["good movie", "bad movie", "not good", "good"], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    for _ in range(3):
        e.backward(e(ids, mask)[:, 1].mean())
        e.step()
    e.save_checkpoint(sys.argv[1], tag="t", exclude_frozen_parameters=True)
    e.eval()
    with torch.no_grad():
        want = e(ids, mask)
    f, _ = engine(0)  # same frozen base (seeded), fresh adapters and head
    f.load_checkpoint(sys.argv[1], tag="t", load_module_strict=False)
    f.eval()
    with torch.no_grad():
        got = f(ids, mask)
    assert torch.allclose(got, want, atol=1e-6), (got, want)
    print("OK", N_TRAINABLE)
    """
)


def test_zero3_checkpoint_holds_only_trainable_state_and_resumes(tmp_path):
    """DeepSpeed ZeRO-3 save_checkpoint(exclude_frozen_parameters=True), as a LoRA run's
    checkpoints are saved (w2sray/train/checkpoint.py), holds no frozen base weight, and loading
    it into a fresh engine gives the saved engine's predictions."""
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(29500 + os.getpid() % 1000),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    ckpt = tmp_path / "ckpt"
    out = subprocess.run(
        [sys.executable, "-c", CHECKPOINT_SCRIPT, str(ckpt)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    n_trainable = int(out.stdout.split("OK")[-1].split()[0])
    names, numel = set(), 0
    for f in (ckpt / "t").iterdir():
        state = torch.load(f, map_location="cpu", weights_only=False)
        for k, v in _tensors(state):
            names.add(k)
            numel += v.numel()
    # no frozen weight by name, and no more numbers than ZeRO's fp32 partition and Adam's m
    # and v of the trainable parameters (and a step count): the base model has 10x more
    assert not any(k.endswith(("wte.weight", "c_attn.weight", "ln_f.weight")) for k in names)
    assert 3 * n_trainable <= numel <= 3 * n_trainable + 10, (numel, n_trainable)


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}.{i}")


def test_zero3_two_worker_lora_run_and_its_adapter(ray_cluster, tmp_path):
    """A LoRA run (w2s-tiny-2's ground-truth run), ZeRO-3 over 2 workers, through Tune -> Train
    -> DeepSpeed: it trains, records its LoRA settings and parameter counts, stores only the
    adapters and the head, and those loaded back into the model built from the same source
    predict the run's stored test predictions."""
    from w2sray.artifacts import ADAPTER
    from w2sray.data import make_splits
    from w2sray.store import Store
    from w2sray.sweep import execute
    from w2sray.train.steps import Encoded, predict

    raw = copy.deepcopy(BASE)
    raw["storage"] = str(tmp_path / "store")
    # a checkpoint at step 2 (as a run that may be restarted takes them): saved without the
    # frozen weights by every rank
    strong = {
        "name": "w2s-tiny-2",
        "resources": {"workers": 2, "zero_stage": 3, "max_failures": 1, "checkpoint_every": 2},
    }
    raw["models"] = ["w2s-tiny-1", strong]
    spec = parse_spec(raw)
    (run,) = [r for r in plan_sweep(spec).gt if r.model.name == "w2s-tiny-2"]
    store = Store(spec.storage)
    out = execute(spec, Plan(pretrain=(), gt=(run,), transfer=()), store)
    assert out.failed == {}, out.failed

    m = store.read_json(run.key, "metrics.json")
    assert m["workers"] == 2 and m["engine_zero_stage"] == 3 and m["steps"] == 4
    assert m["lora"] == run.train.lora and m["lora"]["r"] == 4
    assert 0 < m["trainable_params"] < m["params"] / 10
    state = torch.load(io.BytesIO(store.read_bytes(run.key, ADAPTER)))
    assert sum(v.numel() for v in state.values()) == m["trainable_params"]
    assert all("lora_" in k or k.startswith("head.") for k in state)
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)  # it trained

    (progress,) = list(tmp_path.glob("store/ray/**/progress-rank1.json"))
    names = set()
    for f in progress.parent.glob("w2sray/*.pt"):
        names |= {k for k, _ in _tensors(torch.load(f, map_location="cpu", weights_only=False))}
    assert any("lora_A" in k for k in names)  # the module's trainable entries...
    assert not any(k.endswith(("wte.weight", "c_attn.weight", "ln_f.weight")) for k in names)

    ds = run.dataset
    splits = make_splits(ds.name, ds.params, ds.n_gt, ds.n_weak, ds.n_test, 0)
    loaded = load_model("w2s-tiny-2", seed=run.seed, corpus=splits.gt_texts)
    apply_lora(loaded.backbone, run.train.lora, "gpt2")
    model = W2SClassifier(loaded.backbone, loaded.pooling)
    load_trainable_state(model, state)
    enc = Encoded(loaded.tokenizer, splits.test_texts, run.train.max_length)
    p1 = predict(model, enc, 64, 0, 1, torch.device("cpu"))
    stored = store.read_parquet(run.key, TEST_PREDICTIONS)["p1"].to_numpy()
    np.testing.assert_allclose(p1, stored, atol=1e-5)
