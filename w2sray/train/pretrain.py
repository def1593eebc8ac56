"""Ray Train entry point of a pretraining run: causal-LM (``clm``) or masked-LM (``mlm``,
encoders) training on an unlabeled corpus.

The same path as every other run (Tune trial -> TorchTrainer -> DeepSpeed engine); what it
stores is a model folder, ``model/`` in the run's directory (save_pretrained: config, weights,
tokenizer), from which the model's ground-truth, transfer and search runs then load it.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np
import torch

from w2sray.artifacts import MODEL_DIR, record_files
from w2sray.data.corpus import load_corpus
from w2sray.store import Store
from w2sray.train.steps import Encoded, _lr_lambda, _order, lm_steps


def model_files(lm: Any, tokenizer: Any, state: dict[str, torch.Tensor]) -> dict[str, bytes]:
    """The model folder (weights in float32, config, tokenizer) as {"model/<name>": bytes}."""
    with tempfile.TemporaryDirectory() as tmp:
        lm.save_pretrained(tmp, state_dict=state)
        tokenizer.save_pretrained(tmp)
        out = {}
        for root, _, names in os.walk(tmp):
            for name in names:
                path = os.path.join(root, name)
                rel = os.path.relpath(path, tmp).replace(os.sep, "/")
                with open(path, "rb") as fh:
                    out[f"{MODEL_DIR}/{rel}"] = fh.read()
    return out


def mask_tokens(
    ids: torch.Tensor,
    mask: torch.Tensor,
    prob: float,
    mask_id: int,
    vocab: int,
    special: list[int],
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: each real, non-special token is a target with probability ``prob``;
    a target's input becomes the mask token (80%), a random token (10%) or stays (10%). Returns
    (inputs, labels) with labels -100 off target. At least one target per batch (HF's loss is
    NaN with none)."""
    eligible = mask.bool() & ~torch.isin(ids, torch.tensor(special, dtype=ids.dtype))
    target = eligible & (torch.rand(ids.shape, generator=gen) < prob)
    if not target.any() and eligible.any():
        target.view(-1)[eligible.view(-1).nonzero()[0]] = True
    labels = ids.masked_fill(~target, -100)
    draw = torch.rand(ids.shape, generator=gen)
    inputs = ids.clone()
    inputs[target & (draw < 0.8)] = mask_id
    swap = target & (draw >= 0.8) & (draw < 0.9)
    inputs[swap] = torch.randint(vocab, ids.shape, generator=gen)[swap]
    return inputs, labels


def _masker(run: dict[str, Any], tok: Any, rank: int) -> Any:
    """A masked-LM run's masking (``mask_tokens`` at its mask_prob), None for a causal LM. Masks
    are drawn from the seed and rank, so a rerun draws the same."""
    if run["loss"] != "mlm":
        return None
    gen = torch.Generator().manual_seed(run["seed"] * 1_000_003 + rank)
    special, prob = list(tok.all_special_ids), run["loss_params"]["mask_prob"]

    def masker(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_tokens(ids, mask, prob, tok.mask_token_id, len(tok), special, gen)

    return masker


def _lm_state(engine: Any, stage: int, rank: int) -> dict[str, torch.Tensor]:
    """The language model's weights in float32 on rank 0 ({} elsewhere). Every rank takes part
    in gathering ZeRO-3's partitioned parameters."""
    from w2sray.train.zero import gathered

    lm = engine.module.lm
    with gathered(lm.parameters(), stage):
        if rank != 0:
            return {}
        return {k: v.detach().float().cpu().clone() for k, v in lm.state_dict().items()}


def _loss_ends(losses: list[float], steps: int, world: int) -> tuple[float, float]:
    """The mean loss over the first and over the last 5% of steps, averaged over workers."""
    import torch.distributed as dist

    window = max(1, steps // 20)
    stats = torch.tensor([float(np.mean(losses[:window])), float(np.mean(losses[-window:]))])
    if world > 1:
        dist.all_reduce(stats)
        stats /= world
    return float(stats[0]), float(stats[1])


def pretrain_loop_per_worker(config: dict[str, Any]) -> None:
    """``config`` = {"run": Run.to_config() of a "pretrain" run, "store": uri}. Phases: start
    the worker, read the corpus, load the model with its LM head, build the engine, train,
    gather the weights, rank 0 writes the model folder, every rank reports."""
    # deepspeed imported here, at the start: its import time is setup, not the engine's init
    import psutil

    from w2sray.train.zero import import_deepspeed

    import_deepspeed()

    from w2sray.models import W2SClassifier
    from w2sray.settings import CorpusRef, PretrainSettings
    from w2sray.train.worker import load_run_model, report, start_worker, typed_resources
    from w2sray.train.zero import build_engine, resolve_bf16

    t_start = time.time()
    process_start = psutil.Process().create_time()
    run, store = config["run"], Store(config["store"])
    pre, res = PretrainSettings.from_dict(run["train"]), typed_resources(run)
    w = start_worker(run)

    texts = load_corpus(CorpusRef.from_dict(run["dataset"]))
    bf16 = resolve_bf16("auto", w.use_gpu, w.use_gpu and torch.cuda.is_bf16_supported())
    # a built-in model's word-level vocabulary comes from its corpus
    lm_head = "mlm" if run["loss"] == "mlm" else True
    loaded = load_run_model(run, store, w.use_gpu, bf16, texts, lm_head=lm_head)
    model = W2SClassifier(loaded.backbone, loaded.pooling, lm=loaded.lm)
    n_params = sum(p.numel() for p in loaded.lm.parameters())
    enc = Encoded(loaded.tokenizer, texts, pre.max_length)
    steps, batch = pre.steps, pre.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=pre.lr, weight_decay=pre.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps, pre.warmup_frac))
    engine, stage = build_engine(
        model, optimizer, scheduler, batch // w.world, w.world, res, pre.grad_clip, bf16,
        w.use_gpu,
    )  # fmt: skip
    order = _order(run["seed"], len(texts), steps * batch)

    t_train = time.time()
    masker = _masker(run, loaded.tokenizer, w.rank)
    losses = lm_steps(engine, enc, order, steps, batch, w.rank, w.world, w.device, masker)
    train_seconds = time.time() - t_train
    tokens = sum(len(enc.ids[i]) for i in order[: steps * batch])

    state = _lm_state(engine, stage, w.rank)
    loss_start, loss_end = _loss_ends(losses, steps, w.world)
    metrics = {
        "objective": run["loss"],  # clm | mlm (an mlm loss is over the masked tokens only)
        "lm_loss_start": loss_start,
        "lm_loss": loss_end,
        "steps": steps,
        "documents": len(texts),
        "tokens": tokens,
        "tokens_per_second": tokens / max(train_seconds, 1e-9),
        "train_seconds": train_seconds,
        "truncated_train": enc.truncated,
        "vocab_size": len(loaded.tokenizer),
        "params": n_params,
        "workers": w.world,
        "zero_stage": res.zero_stage,  # the spec's
        "engine_zero_stage": stage,
        "dtype": "bf16" if bf16 else "fp32",
        "gpu": w.use_gpu,
        "gpu_memory_fraction": w.gpu_memory_fraction,  # the allocator's cap, None: not capped
        "t_process_start": process_start,
        "t_loop_start": t_start,
        "t_train_start": t_train,
        "t_train_end": t_train + train_seconds,
    }
    if w.rank == 0:
        files = model_files(loaded.lm, loaded.tokenizer, state)
        metrics["t_eval_end"] = time.time()  # the model saved
        curve_every = max(1, steps // 50)
        curve = {"step": list(range(0, steps, curve_every)), "loss": losses[::curve_every]}
        files.update(record_files(run, {**metrics, "lm_loss_curve": curve}, sort_metrics=False))
        store.write_run(run["key"], files)
    report(run, metrics)
