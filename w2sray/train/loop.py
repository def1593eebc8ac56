"""The per-worker training loop: one run, trained with a DeepSpeed engine on every Ray Train worker.

A short sequence of phases: set up the worker; read the run's task (what it trains on and how it
is judged, by run kind: w2sray/train/tasks.py) from deterministically regenerated splits and the
store; build the model and its engine (LoRA, resume from a checkpoint); train (generative
fine-tuning first if asked, model selection on held-out rows if asked); evaluate; rank 0 writes
the artifacts atomically and every rank reports. It knows nothing about Tune.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from w2sray.artifacts import ADAPTER, record_files
from w2sray.data import run_splits
from w2sray.methods import generative
from w2sray.settings import DataRef
from w2sray.store import Store, parquet_bytes
from w2sray.train.steps import (
    Encoded,
    _lr_lambda,
    _order,
    predict,
    train_steps,
)
from w2sray.train.tasks import Evaluation, task_for
from w2sray.train.worker import (
    Worker,
    load_run_model,
    report,
    start_worker,
    typed_resources,
    typed_train,
)
from w2sray.train.zero import gathered, import_deepspeed

if TYPE_CHECKING:
    from w2sray.spec import TrainSettings


@dataclass
class TrainRows:
    """The rows the optimiser sees, and (train.select) the held-out rows it is scored on."""

    texts: list[str]
    targets: np.ndarray  # [N, 2] soft targets
    val_texts: list[str] = field(default_factory=list)
    val_targets: np.ndarray | None = None


def _train_rows(task: Any, select: dict[str, Any] | None, split_seed: int) -> TrainRows:
    """The task's training rows, less a held-out part when train.select asks for one."""
    from w2sray.train.select import holdout

    if not select:
        return TrainRows(task.texts, task.targets)
    rows, val = holdout(len(task.texts), select["val_frac"], split_seed)
    return TrainRows(
        [task.texts[i] for i in rows], task.targets[rows], [task.texts[i] for i in val],
        task.targets[val],
    )  # fmt: skip


@dataclass
class Model:
    """The model as loaded and wrapped, before DeepSpeed: its tokenizer, the classifier, what
    LoRA applied, and parameter counts taken before ZeRO-3 partitions them."""

    tokenizer: Any
    module: torch.nn.Module
    trainable: list[torch.nn.Parameter]  # with LoRA: adapters and head
    lora: dict[str, Any] | None
    bf16: bool
    n_params: int
    n_trainable: int


def _model_type(loaded: Any) -> str:
    return str(getattr(loaded.backbone.config, "model_type", ""))


def _load_model(
    run: dict[str, Any], train: TrainSettings, w: Worker, splits: Any, store: Store
) -> Model:
    from w2sray.models import W2SClassifier, enable_gradient_checkpointing
    from w2sray.train.zero import resolve_bf16

    m = run["model"]
    gen = run.get("generative") or {}
    bf16 = resolve_bf16(train.dtype, w.use_gpu, w.use_gpu and torch.cuda.is_bf16_supported())
    # a built-in model learns its vocabulary from split A
    loaded = load_run_model(run, store, w.use_gpu, bf16, splits.gt_texts, lm_head=bool(gen))
    lora = train.lora  # train.lora: adapters on the frozen backbone (models/lora.py)
    if lora:
        from w2sray.models.lora import apply_lora

        if gen:
            raise ValueError("train.lora cannot be combined with generative fine-tuning")
        lora = {**lora, "target_modules": apply_lora(loaded.backbone, lora, _model_type(loaded))}
    if train.gradient_checkpointing:
        enable_gradient_checkpointing(loaded.backbone, m["source"])
    module = W2SClassifier(loaded.backbone, loaded.pooling, lm=loaded.lm)
    trainable = [p for p in module.parameters() if p.requires_grad]
    return Model(
        loaded.tokenizer, module, trainable, lora, bf16,
        sum(p.numel() for p in module.parameters()), sum(p.numel() for p in trainable),
    )  # fmt: skip


@dataclass
class Schedule:
    """How many steps: the classification phase's, and generative fine-tuning's before it
    (on the same texts without their labels), with its learning rate."""

    steps_per_epoch: int
    total_steps: int
    gen_steps: int
    gen_lr: float

    @classmethod
    def of(cls, run: dict[str, Any], train: TrainSettings, n_rows: int) -> Schedule:
        gen = run.get("generative") or {}
        steps_per_epoch = max(1, n_rows // train.batch_size)
        return cls(
            steps_per_epoch,
            max(1, int(round(train.epochs * steps_per_epoch))),
            generative.steps(gen, steps_per_epoch),
            generative.lr(gen, train.lr),
        )


def _engine(
    run: dict[str, Any], train: TrainSettings, w: Worker, model: Model, sched: Schedule
) -> tuple[Any, int]:
    """The DeepSpeed engine around the model, with the client AdamW and the lr schedule."""
    from w2sray.train.zero import build_engine

    optimizer = torch.optim.AdamW(model.trainable, lr=train.lr, weight_decay=train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        _lr_lambda(
            sched.total_steps, train.lr_warmup_frac, sched.gen_steps, sched.gen_lr / train.lr
        ),
    )
    micro = train.batch_size // w.world
    return build_engine(
        model.module, optimizer, scheduler, micro, w.world, typed_resources(run),
        train.grad_clip, model.bf16, w.use_gpu,
    )  # fmt: skip


@dataclass
class Trained:
    """What the training phases did: per-step losses and tokens (a resumed attempt's include
    the checkpointed ones), generative losses, the step resumed from, timings."""

    losses: list[float]
    tokens: int
    gen_losses: list[float]
    start_step: int
    t_gen: float  # the training phases' start: setup ends here
    gen_seconds: float
    t_train: float
    train_seconds: float
    train_cpu_seconds: float
    selector: Any  # train.select's Selector, or None


def _train(
    run: dict[str, Any],
    train: TrainSettings,
    w: Worker,
    engine: Any,
    model: Model,
    rows: TrainRows,
    enc: Encoded,
    sched: Schedule,
) -> Trained:
    """Resume from Ray Train's last checkpoint if this is a restarted attempt of the run, then
    generative fine-tuning (if asked and not done), then the classification steps with periodic
    checkpoints and, with train.select, scoring on the held-out rows; the kept state is put
    back at the end."""
    from w2sray.train import checkpoint
    from w2sray.train.select import Selector, score

    res = typed_resources(run)
    select, lora = train.select, bool(model.lora)
    # Every worker draws the same global order (see train_steps).
    order = _order(run["seed"], len(rows.texts), sched.total_steps * train.batch_size)
    # Checkpoints are taken in the classification phase only; their step counts the
    # generative steps before it.
    start_step, done_losses, done_tokens = checkpoint.restore(
        engine, w.rank, run["key"], frozen_excluded=lora
    )
    every = checkpoint.checkpoint_interval(
        sched.total_steps, res.checkpoint_every, res.max_failures
    )
    selector = None
    if select:
        val_enc = Encoded(model.tokenizer, rows.val_texts, train.max_length)

        def evaluate() -> float:
            p1 = predict(engine, val_enc, train.eval_batch_size, w.rank, w.world, w.device)
            return score(select["metric"], rows.val_targets, p1)

        selector = Selector(select["metric"], select["every"], sched.total_steps, evaluate)

    def on_step(step: int, losses: list[float], tokens: int) -> None:
        if every and step % every == 0 and step < sched.total_steps:
            checkpoint.save(
                engine, sched.gen_steps + step, done_losses + losses, done_tokens + tokens,
                w.rank, run["key"], exclude_frozen=lora,
            )  # fmt: skip
        if selector is not None:
            selector.on_step(step, engine.module)

    t_gen = time.time()
    gen_losses, gen_seconds = generative.train(run, engine, enc, sched.gen_steps, start_step, w)
    t_train, cpu_train = time.time(), time.process_time()
    losses, tokens = train_steps(
        engine, enc, torch.from_numpy(rows.targets), order, sched.total_steps,
        train.batch_size, w.rank, w.world, w.device, run["loss"], run["loss_params"],
        max(0, start_step - sched.gen_steps), on_step,
    )  # fmt: skip
    train_seconds = time.time() - t_train
    train_cpu_seconds = time.process_time() - cpu_train
    if selector is not None:
        selector.restore(engine.module)  # every prediction after this is the kept state's
    return Trained(
        done_losses + losses, done_tokens + tokens, gen_losses, start_step, t_gen, gen_seconds,
        t_train, train_seconds, train_cpu_seconds, selector,
    )  # fmt: skip


def _gather_trainable(module: Any, stage: int) -> dict[str, torch.Tensor]:
    """The trainable parameters on the CPU, gathered from every rank's partition under ZeRO-3
    (every rank must call this)."""
    from w2sray.models.lora import trainable_state

    with gathered([p for p in module.parameters() if p.requires_grad], stage):
        return trainable_state(module)


def _tensor_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _reduced(trained: Trained, sched: Schedule, world: int) -> tuple[float, float, float]:
    """(train loss over the last epoch, tokens, generative loss) summed or averaged over the
    workers, so what rank 0 reports describes the whole run."""
    import torch.distributed as dist

    last = max(1, sched.steps_per_epoch)
    gen_loss = float(np.mean(trained.gen_losses[-last:])) if trained.gen_losses else 0.0
    stats = torch.tensor([float(np.mean(trained.losses[-last:])), float(trained.tokens), gen_loss])
    if world > 1:
        dist.all_reduce(stats)
        stats[0] /= world
        stats[2] /= world
    return float(stats[0]), float(stats[1]), float(stats[2])


def _run_metrics(
    run: dict[str, Any],
    train: TrainSettings,
    w: Worker,
    model: Model,
    sched: Schedule,
    rows: TrainRows,
    enc: Encoded,
    trained: Trained,
    evaluation: Evaluation,
    engine: Any,
    stage: int,
) -> dict[str, Any]:
    """metrics.json's account of how the run trained and ran (the evaluation's metrics and
    the loop's own timings are added by the caller)."""
    train_loss, tokens, gen_loss = _reduced(trained, sched, w.world)
    metrics = {
        "train_loss": train_loss,
        "steps": sched.total_steps,
        "train_seconds": trained.train_seconds,
        "t_train_start": trained.t_train,
        "t_train_end": trained.t_train + trained.train_seconds,
        "tokens_per_second": tokens / max(trained.train_seconds, 1e-9),
        # How this worker ran (benchmarks/RESULTS.md section 7): its scheduling priority (Ray
        # starts workers at nice 15 unless RAY_worker_niceness says otherwise), its torch
        # threads and the CPU time of its process while training (over train_seconds: the
        # cores it actually had).
        "worker_nice": os.getpriority(os.PRIO_PROCESS, 0),
        "torch_threads": torch.get_num_threads(),
        "train_cpu_seconds": trained.train_cpu_seconds,
        "examples": len(rows.texts),
        "n_test": evaluation.n_test,
        "truncated_train": enc.truncated,
        "truncated_eval": evaluation.truncated,
        "workers": w.world,
        "resumed_from_step": trained.start_step,
        "zero_stage": typed_resources(run).zero_stage,  # the spec's
        "engine_zero_stage": stage,  # the engine's (engine_stage: 0 for one fp32 CPU worker)
        "engine_allreduce": bool(engine.enable_backward_allreduce),
        "params": model.n_params,
        "trainable_params": model.n_trainable,  # all of them without LoRA
        "dtype": "bf16" if model.bf16 else "fp32",  # train.dtype as resolved on this device
        "gradient_checkpointing": bool(train.gradient_checkpointing),
        "gpu": w.use_gpu,
        "gpu_memory_fraction": w.gpu_memory_fraction,  # the allocator's cap, None: not capped
        "gpu_name": torch.cuda.get_device_name(w.device) if w.use_gpu else None,
    }
    if trained.selector is not None:
        metrics.update(trained.selector.metrics())  # which step was kept, the validation curve
        metrics["select_val_rows"] = len(rows.val_texts)
    if model.lora:
        metrics["lora"] = model.lora  # target_modules as applied
    if run.get("generative"):
        metrics.update(
            generative.metrics(sched.gen_steps, gen_loss, trained.gen_losses, trained.gen_seconds)
        )
    return metrics


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config`` = {"run": Run.to_config(), "store": uri}."""
    # deepspeed imported here, at the start: its import time is setup, not the engine's init
    import psutil

    import_deepspeed()

    t_start = time.time()
    process_start = psutil.Process().create_time()
    run, store = config["run"], Store(config["store"])
    train, ds = typed_train(run), DataRef.from_dict(run["dataset"])
    w = start_worker(run)
    splits = run_splits(ds)
    task = task_for(run["kind"])(run, splits, store)
    rows = _train_rows(task, train.select, ds.split_seed)
    model = _load_model(run, train, w, splits, store)
    enc = Encoded(model.tokenizer, rows.texts, train.max_length)
    sched = Schedule.of(run, train, len(rows.texts))
    t_ds = time.time()
    engine, stage = _engine(run, train, w, model, sched)
    trained = _train(run, train, w, engine, model, rows, enc, sched)

    def predict_on(texts: list[str]) -> tuple[np.ndarray, int]:
        e = Encoded(model.tokenizer, texts, train.max_length)
        return predict(engine, e, train.eval_batch_size, w.rank, w.world, w.device), e.truncated

    adapter = _gather_trainable(engine.module, stage) if model.lora else None
    t_eval = time.time()
    evaluation = task.evaluate(predict_on)
    eval_seconds = time.time() - t_eval
    metrics = {
        **evaluation.metrics,
        **_run_metrics(run, train, w, model, sched, rows, enc, trained, evaluation, engine, stage),
        "eval_seconds": eval_seconds,
        "setup_seconds": trained.t_gen - t_start,
        "deepspeed_init_seconds": trained.t_gen - t_ds,
        # wall-clock stamps, to split a run's cost into Ray start-up / setup / train / eval
        "t_process_start": process_start,
        "t_loop_start": t_start,
        "t_eval_end": t_eval + eval_seconds,
    }
    if w.rank == 0:
        files = record_files(run, metrics)
        files.update({name: parquet_bytes(df) for name, df in evaluation.tables.items()})
        if adapter is not None:  # LoRA: the adapters and the head (models/lora.py)
            files[ADAPTER] = _tensor_bytes(adapter)
        store.write_run(run["key"], files)
    report(run, metrics)
