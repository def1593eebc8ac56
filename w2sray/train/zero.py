"""DeepSpeed configuration for one run: ZeRO stage, precision, batch layout."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from w2sray.spec import Resources

# Set to "spec" (in the workers' environment, e.g. a runtime_env) to build every engine with the
# spec's ZeRO stage, one-worker CPU runs included: to exercise ZeRO's code paths on a CPU box.
KEEP_STAGE_ENV = "W2SRAY_ENGINE_ZERO_STAGE"


def resolve_bf16(dtype: str, gpu: bool, gpu_bf16: bool) -> bool:
    """Whether a run trains in bf16, from TrainSettings.dtype and the worker's device.

    ``auto``: bf16 on a GPU that supports it (``gpu_bf16``: torch.cuda.is_bf16_supported()),
    fp32 otherwise (CPU included); ``fp32``: always fp32; ``bf16``: always bf16 (on CPU too,
    where it is slow), an error on a GPU without bf16.
    """
    if dtype == "auto":
        return gpu and gpu_bf16
    if dtype == "fp32":
        return False
    if dtype == "bf16":
        if gpu and not gpu_bf16:
            raise ValueError(
                "train.dtype is bf16 but this GPU does not support bf16: use auto or fp32"
            )
        return True
    raise ValueError(f"train.dtype must be auto, fp32 or bf16, got {dtype!r}")


def engine_stage(zero_stage: int, world_size: int, gpu: bool, bf16: bool, offload: bool) -> int:
    """The ZeRO stage a run's DeepSpeed engine is built with: the spec's, except 0 for a
    one-worker fp32 run on CPU without offload.

    With one worker ZeRO partitions nothing (the one partition is the whole model), so on CPU its
    stages only add work: a flat fp32 master copy of the parameters, per-parameter gradient
    hooks copying every gradient into ZeRO's buffers, and a copy of the master weights back into
    the model each step. On a 17M-parameter encoder (2 threads) ZeRO-1 ran 0.78 of a plain torch
    loop's examples/s, stage 0 0.98-0.99 (without its all-reduce, see train_loop_per_worker;
    benchmarks/RESULTS.md section 7). Stage 0 with a client AdamW is the same optimisation (fp32
    weights, the engine's gradient clipping), so the run's results agree up to float rounding
    (per-step losses within 1.2e-7 of ZeRO-1's over 30 steps), as Resources promises. GPUs
    (memory layout), bf16 (ZeRO keeps the fp32 master weights) and offload keep their stage, and
    so does every run when $W2SRAY_ENGINE_ZERO_STAGE is "spec".
    """
    keep = os.environ.get(KEEP_STAGE_ENV) == "spec"
    if world_size == 1 and not gpu and not bf16 and not offload and not keep:
        return 0
    return zero_stage


def deepspeed_config(
    micro_batch: int,
    world_size: int,
    zero_stage: int,
    grad_clip: float,
    bf16: bool,
    offload: bool = False,
    gpu: bool | None = None,
) -> dict[str, Any]:
    """A DeepSpeed config for a client (torch) optimizer.

    ``bf16`` is the run's resolved precision (resolve_bf16): DeepSpeed's bf16 mixed precision
    (the model's parameters in bf16, the loss computed in float32 by w2sray.losses).

    The global batch is micro_batch * world_size with no gradient accumulation, so a run sees the
    same batches whatever its worker count. A torch AdamW is passed to deepspeed.initialize:
    DeepSpeed's fused/CPU Adam would compile for minutes on a CPU-only machine.
    """
    zero: dict[str, Any] = {"stage": zero_stage}
    if zero_stage >= 1:
        # Contiguous gradient buffers fight fragmentation in GPU memory; on CPU they only add a
        # copy of every gradient per step (ZeRO-1 step throughput 0.71 -> 0.92 of plain torch,
        # benchmarks/RESULTS.md).
        zero.update(overlap_comm=False, contiguous_gradients=bf16 if gpu is None else gpu)
    if offload and zero_stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
        if zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "train_batch_size": micro_batch * world_size,
        "gradient_clipping": grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        # Offload with a torch optimizer: do not force DeepSpeed's compiled CPUAdam.
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


# Imports DeepSpeed makes that a w2sray worker never uses, and that cost every worker process
# seconds of CPU on each start (benchmarks/RESULTS.md 10d): its autotuner imports MLflow when
# installed (for autotuning runs' logging; ~0.7 s), and its ZeRO optimizers import the Muon
# optimizer class, which compiles Muon's kernels through torch._dynamo / _inductor (~1.5 s),
# only to check ``isinstance(optimizer, MuonWithAuxAdam)``.
MLFLOW = "mlflow"
MUON = "deepspeed.runtime.zero.muon.muon_optimizer"


def _muon_stub() -> Any:
    """A stand-in for DeepSpeed's Muon module: its class exists, and no optimizer is one (a
    w2sray run's optimizer is torch's AdamW), so every Muon branch of ZeRO stays off."""
    import types

    module = types.ModuleType(MUON, "w2sray: Muon is not used (w2sray.train.zero._muon_stub)")

    class MuonWithAuxAdam:  # never instantiated
        pass

    module.MuonWithAuxAdam = MuonWithAuxAdam  # type: ignore[attr-defined]
    return module


def import_deepspeed() -> Any:
    """``import deepspeed`` without the MLflow import of its autotuner (MLflow stays importable
    afterwards: only DeepSpeed's autotuner sees it as absent), and with a stand-in for its Muon
    optimizer module, unless something imported the real one already."""
    import sys

    masked = MLFLOW not in sys.modules
    if masked:
        sys.modules[MLFLOW] = None  # type: ignore[assignment]  # reads as not installed
    try:
        import deepspeed
    finally:
        if masked and sys.modules.get(MLFLOW, ...) is None:
            del sys.modules[MLFLOW]
    sys.modules.setdefault(MUON, _muon_stub())
    return deepspeed


def build_engine(
    model: Any,
    optimizer: Any,
    scheduler: Any,
    micro_batch: int,
    world_size: int,
    res: Resources,
    grad_clip: float,
    bf16: bool,
    gpu: bool,
) -> tuple[Any, int]:
    """A run's DeepSpeed engine and the ZeRO stage it was built with (engine_stage)."""
    deepspeed = import_deepspeed()

    offload = res.offload
    stage = engine_stage(res.zero_stage, world_size, gpu, bf16, offload)
    cfg = deepspeed_config(micro_batch, world_size, stage, grad_clip, bf16, offload, gpu)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=cfg
    )
    if stage == 0 and world_size == 1 and not bf16:
        # Without ZeRO, DeepSpeed all-reduces the gradients after every backward: it flattens them
        # into one buffer, reduces it and copies it back, an identity with one worker that costs
        # two copies of every gradient per step (examples/s on a 17M encoder on CPU: 0.82-0.96
        # of a plain torch loop with it, 0.98-0.99 without; benchmarks/RESULTS.md section 7).
        engine.enable_backward_allreduce = False
    return engine, stage


def gathered(params: Any, stage: int) -> Any:
    """A context in which ZeRO-3's partitioned ``params`` are whole on every rank (every rank
    must enter it); nothing to gather at other stages."""
    if stage != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(params), modifier_rank=None)
