"""The per-worker training loop: one run, trained with a DeepSpeed engine on every Ray Train worker.

Reads its data (regenerated deterministically) and, for a transfer run, the weak labels from the
store; trains; evaluates on the shared test split; rank 0 writes the artifacts atomically. It
knows nothing about Tune.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from w2sray.artifacts import (
    ADAPTER,
    MODEL_DIR,
    TEST_PREDICTIONS,
    VAL_PREDICTIONS,
    WEAK_LABELS,
    record_files,
)
from w2sray.data import make_splits
from w2sray.losses import compute_loss
from w2sray.metrics import accuracy, roc_auc
from w2sray.store import Store, parquet_bytes
from w2sray.train.zero import gathered


def _lr_lambda(total: int, warmup_frac: float, before: int = 0, before_scale: float = 1.0):
    """Linear warmup then cosine decay over ``total`` steps. With ``before`` > 0 (generative
    fine-tuning first) the same shape runs over those steps first, scaled by ``before_scale``
    (its lr over the run's), then restarts for the ``total`` classification steps."""

    def shape(step: int, n: int) -> float:
        warm = int(n * warmup_frac)
        if warm and step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, n - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def f(step: int) -> float:
        if step < before:
            return before_scale * shape(step, before)
        return shape(step - before, total)

    return f


def load_weak_p1(run: dict[str, Any], splits: Any, store: Store) -> np.ndarray:
    """The upstream run's class-1 probabilities on split B (a GT run's, or a bootstrapping
    step's), checked against split B's example ids."""
    weak_key = run["upstream"][0]
    weak = store.read_parquet(weak_key, WEAK_LABELS)
    if not np.array_equal(weak["id"].to_numpy(), splits.weak_ids):
        raise ValueError(
            f"weak labels of run {weak_key} do not match split B of run {run['key']}: "
            "their example ids differ"
        )
    return weak["p1"].to_numpy(dtype=np.float32)


def load_targets(run: dict[str, Any], splits: Any, store: Store) -> tuple[list[str], np.ndarray]:
    """Training texts and soft targets [N, 2]: ground truth for gt runs, the upstream run's
    predictions on split B for transfers."""
    if run["kind"] == "gt":
        y = np.asarray(splits.gt_labels)
        return splits.gt_texts, np.stack([1 - y, y], axis=1).astype(np.float32)
    p1 = load_weak_p1(run, splits, store)
    return splits.weak_texts, np.stack([1 - p1, p1], axis=1)


@dataclass
class SearchInputs:
    """What a search trial sees: split B cut into a training part (weak labels) and a held-out
    validation part with its weak labels and its ground truth. Nothing from the test split."""

    train_texts: list[str]
    train_targets: np.ndarray  # [N, 2] soft weak labels
    val_texts: list[str]
    val_weak: np.ndarray  # weak model's hard labels on the validation part
    val_gt: np.ndarray  # ground truth on the validation part (used only if metric is gt_val)


def search_inputs(
    weak_texts: list[str],
    weak_gt: list[int],
    weak_p1: np.ndarray,
    val_frac: float,
    split_seed: int,
) -> SearchInputs:
    """Cut split B for a search trial. Takes split B alone (no test split is passed in), and the
    cut depends only on the split seed, so every trial of a search validates on the same part."""
    from w2sray.train.select import holdout

    train, val = holdout(len(weak_texts), val_frac, split_seed, salt=7919)
    p1 = np.asarray(weak_p1, dtype=np.float32)
    return SearchInputs(
        train_texts=[weak_texts[i] for i in train],
        train_targets=np.stack([1 - p1[train], p1[train]], axis=1),
        val_texts=[weak_texts[i] for i in val],
        val_weak=(p1[val] > 0.5).astype(np.int64),
        val_gt=np.asarray(weak_gt)[val],
    )


class Encoded:
    """Tokenised texts, truncated to max_length (and counted), padded per batch."""

    def __init__(self, tokenizer: Any, texts: list[str], max_length: int):
        enc = tokenizer(texts, truncation=False, padding=False)["input_ids"]
        self.truncated = sum(len(ids) > max_length for ids in enc)
        self.ids = [ids[:max_length] for ids in enc]
        self.pad = tokenizer.pad_token_id
        self.left = getattr(tokenizer, "padding_side", "right") == "left"

    def batch(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.ids[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            sl = slice(width - len(r), width) if self.left else slice(0, len(r))
            ids[j, sl] = torch.tensor(r)
            mask[j, sl] = 1
        return ids.to(device), mask.to(device)


@torch.no_grad()
def predict(engine: Any, enc: Encoded, batch_size: int, rank: int, world: int, device) -> Any:
    """Class-1 probabilities for every example, computed sharded and gathered on all ranks.

    Every rank runs the same number of forward passes (shards padded by repetition), which
    ZeRO-3's parameter gathering requires.
    """
    import torch.distributed as dist

    n = len(enc.ids)
    per_rank = math.ceil(n / world)
    mine = np.arange(rank, n, world)
    padded = np.concatenate([mine, np.full(per_rank - len(mine), mine[-1] if len(mine) else 0)])
    engine.eval()
    probs = []
    for s in range(0, per_rank, batch_size):
        ids, mask = enc.batch(padded[s : s + batch_size], device)
        probs.append(torch.softmax(engine(ids, mask).float(), dim=-1)[:, 1].cpu())
    engine.train()
    p = torch.cat(probs).numpy()[: len(mine)] if probs else np.zeros(0)
    if world == 1:
        return p
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (mine, p))
    out = np.zeros(n, dtype=np.float32)
    for idx, vals in gathered:
        out[idx] = vals
    return out


def _my_slice(order: np.ndarray, step: int, batch_size: int, rank: int, world: int) -> np.ndarray:
    """This worker's share of global batch ``step`` of ``order``."""
    micro = batch_size // world
    batch = order[step * batch_size : (step + 1) * batch_size]
    return batch[rank * micro : (rank + 1) * micro]


def train_steps(
    engine: Any,
    enc: Encoded,
    targets: torch.Tensor,
    order: np.ndarray,
    total_steps: int,
    batch_size: int,
    rank: int,
    world: int,
    device: torch.device,
    loss_name: str,
    loss_params: dict[str, Any],
    start_step: int = 0,
    on_step: Any = None,
) -> tuple[list[float], int]:
    """The optimisation steps from ``start_step``. Every worker walks the same global ``order``;
    worker ``rank`` takes its slice of each global batch. ``on_step(step_done, losses, tokens)``
    runs after each step (checkpoints). Returns per-step losses and this worker's tokens."""
    losses, tokens = [], 0
    for step in range(start_step, total_steps):
        mine = _my_slice(order, step, batch_size, rank, world)
        ids, mask = enc.batch(mine, device)
        tokens += int(mask.sum())
        logits = engine(ids, mask)
        loss = compute_loss(
            loss_name, logits, targets[mine].to(device), step / total_steps, loss_params
        )
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, losses, tokens)
    return losses, tokens


def lm_steps(
    engine: Any,
    enc: Encoded,
    order: np.ndarray,
    total_steps: int,
    batch_size: int,
    rank: int,
    world: int,
    device: torch.device,
    masker: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> list[float]:
    """``total_steps`` steps of the language-modelling loss on the texts of ``enc`` (no
    labels), sharded like train_steps: causal by default; with ``masker`` (ids, mask) ->
    (inputs, labels), run on CPU batches, a masked LM's."""
    losses = []
    for step in range(total_steps):
        idx = _my_slice(order, step, batch_size, rank, world)
        if masker is None:
            ids, mask = enc.batch(idx, device)
            loss = engine(ids, mask, lm_loss=True)
        else:
            ids, mask = enc.batch(idx, torch.device("cpu"))
            inputs, labels = masker(ids, mask)
            loss = engine(
                inputs.to(device), mask.to(device), lm_loss=True, labels=labels.to(device)
            )
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
    return losses


def _order(seed: int, n: int, length: int) -> np.ndarray:
    """A global example order: whole permutations of ``n`` drawn from ``seed`` (all workers
    draw the same one)."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < length:
        order.extend(rng.permutation(n).tolist())
    return np.asarray(order)


def _model_type(loaded: Any) -> str:
    return str(getattr(loaded.backbone.config, "model_type", ""))


def _gather_trainable(module: Any, stage: int) -> dict[str, torch.Tensor]:
    """The trainable parameters on the CPU, gathered from every rank's partition under ZeRO-3
    (every rank must call this)."""
    from w2sray.models.lora import trainable_state

    with gathered([p for p in module.parameters() if p.requires_grad], stage):
        return trainable_state(module)


def _tensor_bytes(state: dict[str, torch.Tensor]) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config`` = {"run": Run.to_config(), "store": uri, "gpu": bool}."""
    # deepspeed imported here, at the start: its import time is setup, not the engine's init
    import deepspeed  # noqa: F401
    import psutil
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from w2sray.models import W2SClassifier, enable_gradient_checkpointing, load_model
    from w2sray.train import checkpoint
    from w2sray.train.gpu_share import limit_gpu_memory
    from w2sray.train.select import Selector, holdout, score
    from w2sray.train.zero import build_engine, resolve_bf16

    t_start = time.time()
    process_start = psutil.Process().create_time()
    run, store = config["run"], Store(config["store"])
    train, res = run["train"], run["resources"]
    gen = run.get("generative") or {}
    searching = run["kind"] == "search"
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    use_gpu = device.type == "cuda"
    # On a shared GPU (gpus_per_worker < 1), before anything is allocated on it.
    gpu_memory_fraction = limit_gpu_memory(res, device)
    torch.manual_seed(run["seed"])

    ds = run["dataset"]
    splits = make_splits(
        ds["name"], ds["params"], ds["n_gt"], ds["n_weak"], ds["n_test"], ds["split_seed"]
    )
    if searching:  # a search trial: split B only; the test split is never looked at
        found = search_inputs(
            splits.weak_texts,
            splits.weak_labels,
            load_weak_p1(run, splits, store),
            run["val_frac"],
            ds["split_seed"],
        )
        texts, targets = found.train_texts, found.train_targets
    else:
        texts, targets = load_targets(run, splits, store)
    select = train.get("select")  # train.select: hold out some training rows to select on
    if select:
        rows, val_rows = holdout(len(texts), select["val_frac"], ds["split_seed"])
        val_texts, val_targets = [texts[i] for i in val_rows], targets[val_rows]
        texts, targets = [texts[i] for i in rows], targets[rows]
    m = run["model"]
    # .get: a run config written before these settings existed means their defaults.
    bf16 = resolve_bf16(
        train.get("dtype", "auto"), use_gpu, use_gpu and torch.cuda.is_bf16_supported()
    )
    pretrained = m.get("pretrain")  # the model's pretraining run: load the weights it stored
    loaded = load_model(
        store.local_folder(pretrained, MODEL_DIR) if pretrained else m["source"],
        seed=run["seed"],
        revision=None if pretrained else m["revision"],
        pooling=m["pooling"],
        trust_remote_code=m["trust_remote_code"],
        # bf16 weights straight from the checkpoint on GPU (DeepSpeed's bf16 cast would make
        # the same values); on CPU float32, and DeepSpeed casts when bf16 is asked for there.
        dtype=torch.bfloat16 if bf16 and use_gpu else torch.float32,
        corpus=splits.gt_texts,  # built-in models learn their vocabulary from split A
        lm_head=bool(gen),
    )
    lora = train.get("lora")  # train.lora: adapters on the frozen backbone (models/lora.py)
    if lora:
        from w2sray.models.lora import apply_lora

        if gen:
            raise ValueError("train.lora cannot be combined with generative fine-tuning")
        lora = {**lora, "target_modules": apply_lora(loaded.backbone, lora, _model_type(loaded))}
    if train.get("gradient_checkpointing", False):
        enable_gradient_checkpointing(loaded.backbone, m["source"])
    model = W2SClassifier(loaded.backbone, loaded.pooling, lm=loaded.lm)
    n_params = sum(p.numel() for p in model.parameters())  # before ZeRO-3 partitions them
    trainable = [p for p in model.parameters() if p.requires_grad]  # with LoRA: adapters, head
    n_trainable = sum(p.numel() for p in trainable)
    enc = Encoded(loaded.tokenizer, texts, train["max_length"])

    micro = train["batch_size"] // world
    steps_per_epoch = max(1, len(texts) // train["batch_size"])
    total_steps = max(1, int(round(train["epochs"] * steps_per_epoch)))
    # Generative fine-tuning runs first, on the same texts without their labels.
    gen_steps = max(1, int(round(gen["epochs"] * steps_per_epoch))) if gen else 0
    gen_lr = (gen.get("lr") or train["lr"]) if gen else train["lr"]
    optimizer = torch.optim.AdamW(trainable, lr=train["lr"], weight_decay=train["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        _lr_lambda(total_steps, train["lr_warmup_frac"], gen_steps, gen_lr / train["lr"]),
    )
    t_ds = time.time()
    engine, stage = build_engine(
        model, optimizer, scheduler, micro, world, res, train["grad_clip"], bf16, use_gpu
    )

    # Every worker draws the same global order (see train_steps).
    order_arr = _order(run["seed"], len(texts), total_steps * train["batch_size"])
    target_t = torch.from_numpy(targets)
    # Resume from Ray Train's last checkpoint if this is a restarted attempt of the run.
    # Checkpoints are taken in the classification phase only; their step counts the
    # generative steps before it.
    start_step, done_losses, done_tokens = checkpoint.restore(
        engine, rank, run["key"], frozen_excluded=bool(lora)
    )
    every = checkpoint.checkpoint_interval(
        total_steps, res.get("checkpoint_every", 0), res.get("max_failures", 0)
    )

    selector = None
    if select:
        val_enc = Encoded(loaded.tokenizer, val_texts, train["max_length"])

        def evaluate() -> float:
            p1 = predict(engine, val_enc, train["eval_batch_size"], rank, world, device)
            return score(select["metric"], val_targets, p1)

        selector = Selector(select["metric"], select["every"], total_steps, evaluate)

    def on_step(step: int, losses: list[float], tokens: int) -> None:
        if every and step % every == 0 and step < total_steps:
            checkpoint.save(
                engine,
                gen_steps + step,
                done_losses + losses,
                done_tokens + tokens,
                rank,
                run["key"],
                exclude_frozen=bool(lora),
            )
        if selector is not None:
            selector.on_step(step, engine.module)

    t_gen = time.time()
    gen_losses: list[float] = []
    if gen_steps and start_step < gen_steps:
        gen_order = _order(run["seed"] + 1, len(texts), gen_steps * train["batch_size"])
        gen_losses = lm_steps(
            engine, enc, gen_order, gen_steps, train["batch_size"], rank, world, device
        )
    gen_seconds = time.time() - t_gen
    t_train, cpu_train = time.time(), time.process_time()
    losses, tokens = train_steps(
        engine, enc, target_t, order_arr, total_steps, train["batch_size"], rank, world, device,
        run["loss"], run["loss_params"], max(0, start_step - gen_steps), on_step,
    )  # fmt: skip
    losses, tokens = done_losses + losses, done_tokens + tokens
    train_seconds = time.time() - t_train
    train_cpu_seconds = time.process_time() - cpu_train
    if selector is not None:
        selector.restore(engine.module)  # every prediction below is the kept state's

    def predict_on(texts_: list[str]) -> np.ndarray:
        e = Encoded(loaded.tokenizer, texts_, train["max_length"])
        return predict(engine, e, train["eval_batch_size"], rank, world, device), e.truncated

    adapter = _gather_trainable(engine.module, stage) if lora else None

    t_eval = time.time()
    if searching:  # validation on the held-out part of split B, nothing else
        val_p1, truncated_eval = predict_on(found.val_texts)
        outputs = {"val_weak_acc": accuracy(found.val_weak, val_p1)}
        outputs["val_gt_acc"] = accuracy(found.val_gt, val_p1)
        outputs["val_weak_auc"] = roc_auc(found.val_weak, val_p1)
    else:
        test_p1, truncated_eval = predict_on(splits.test_texts)
        # Every run predicts split B: a GT run's predictions are weak labels, a transfer's
        # feed the next step of a bootstrapping chain.
        weak_p1, _ = predict_on(splits.weak_texts)
        test_y = np.asarray(splits.test_labels)
        outputs = {"acc": accuracy(test_y, test_p1), "auc": roc_auc(test_y, test_p1)}
        outputs["weak_label_acc"] = accuracy(np.asarray(splits.weak_labels), weak_p1)
    eval_seconds = time.time() - t_eval

    # Reduce the per-worker numbers so what rank 0 reports describes the whole run.
    gen_loss = float(np.mean(gen_losses[-max(1, steps_per_epoch) :])) if gen_losses else 0.0
    stats = torch.tensor(
        [float(np.mean(losses[-max(1, steps_per_epoch) :])), float(tokens), gen_loss]
    )
    if world > 1:
        dist.all_reduce(stats)
        stats[0] /= world
        stats[2] /= world
    metrics = {
        **outputs,
        "train_loss": float(stats[0]),
        "steps": total_steps,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "setup_seconds": t_gen - t_start,
        "deepspeed_init_seconds": t_gen - t_ds,
        # wall-clock stamps, to split a run's cost into Ray start-up / setup / train / eval
        "t_process_start": process_start,
        "t_loop_start": t_start,
        "t_train_start": t_train,
        "t_train_end": t_train + train_seconds,
        "t_eval_end": t_eval + eval_seconds,
        "tokens_per_second": float(stats[1]) / max(train_seconds, 1e-9),
        # How this worker ran (benchmarks/RESULTS.md section 7): its scheduling priority (Ray
        # starts workers at nice 15 unless RAY_worker_niceness says otherwise), its torch
        # threads and the CPU time of its process while training (over train_seconds: the
        # cores it actually had).
        "worker_nice": os.getpriority(os.PRIO_PROCESS, 0),
        "torch_threads": torch.get_num_threads(),
        "train_cpu_seconds": train_cpu_seconds,
        "examples": len(texts),
        "n_test": 0 if searching else len(splits.test_texts),
        "truncated_train": enc.truncated,
        "truncated_eval": truncated_eval,
        "workers": world,
        "resumed_from_step": start_step,
        "zero_stage": res["zero_stage"],  # the spec's
        "engine_zero_stage": stage,  # the engine's (engine_stage: 0 for one fp32 CPU worker)
        "engine_allreduce": bool(engine.enable_backward_allreduce),
        "params": n_params,
        "trainable_params": n_trainable,  # all of them without LoRA
        "dtype": "bf16" if bf16 else "fp32",  # train.dtype as resolved on this device
        "gradient_checkpointing": bool(train.get("gradient_checkpointing", False)),
        "gpu": use_gpu,
        "gpu_memory_fraction": gpu_memory_fraction,  # the allocator's cap, None: not capped
        "gpu_name": torch.cuda.get_device_name(device) if use_gpu else None,
    }
    if selector is not None:
        metrics.update(selector.metrics())  # which step was kept, and the validation curve
        metrics["select_val_rows"] = len(val_texts)
    if lora:
        metrics["lora"] = lora  # target_modules as applied
    if gen:
        # None when a restart resumed after the generative phase (its losses were not kept).
        metrics["gen_steps"] = gen_steps
        metrics["gen_loss"] = float(stats[2]) if gen_losses else None
        metrics["gen_seconds"] = gen_seconds
    if rank == 0:
        files = record_files(run, metrics)
        if searching:
            files[VAL_PREDICTIONS] = parquet_bytes(
                pd.DataFrame({"weak": found.val_weak, "label": found.val_gt, "p1": val_p1})
            )
        else:
            files[TEST_PREDICTIONS] = parquet_bytes(
                pd.DataFrame({"id": splits.test_ids, "label": test_y, "p1": test_p1})
            )
            files[WEAK_LABELS] = parquet_bytes(pd.DataFrame({"id": splits.weak_ids, "p1": weak_p1}))
        if adapter is not None:  # LoRA: the adapters and the head (models/lora.py)
            files[ADAPTER] = _tensor_bytes(adapter)
        store.write_run(run["key"], files)
    # run_key: a pack's runs report one after another to the same Tune trial
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    ray.train.report({**numbers, "run_key": run["key"]})
