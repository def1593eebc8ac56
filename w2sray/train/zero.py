"""DeepSpeed configuration for one run: ZeRO stage, precision, batch layout."""

from __future__ import annotations

from typing import Any


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
