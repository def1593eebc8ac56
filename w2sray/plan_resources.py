"""GPU memory estimates for one run, and a planner choosing its ZeRO stage, workers and offload.

These are ESTIMATES for sizing a sweep before it runs (``w2sray plan --gpu-mem``), not
measurements; real use depends on the DeepSpeed version, allocator fragmentation, sequence
lengths actually seen (batches are padded to their longest text, ``max_length`` is the worst
case) and attention kernels. Nothing here imports torch, DeepSpeed or Ray.

Per GPU, for a model of P parameters trained with Adam by W data-parallel workers (one GPU each;
the training loop uses no gradient accumulation, so each worker's micro batch is the global
batch / W):

- Model states, ZeRO paper accounting (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations
  Toward Training Trillion Parameter Models", section 3.1 and figure 1), mixed precision (bf16
  weights, the loop's choice on GPU): weights 2 P, gradients 2 P, optimizer states K P with
  K = 12 (fp32 master weights, Adam m and v). Stage 1 divides the optimizer states by W, stage
  2 the gradients too, stage 3 the weights too; stage 0 is plain data parallelism. In fp32
  (dtype_bytes 4) weights and gradients are 4 P each and the optimizer 8 P (m, v; the weights
  are their own master copy): 16 P either way.
- Offload (ZeRO-Offload, as w2sray/train/zero.py configures it): the optimizer states live on
  the CPU; at stage 3 the weights too. Gradients are still counted on the GPU (conservative:
  DeepSpeed moves offloaded gradient partitions to the CPU as well, but keeps buckets).
- LoRA (``train.lora``): weights count all P parameters, gradients and optimizer states only
  the T trainable ones (adapters, r * (in + out) per adapted module, and the 2-way head):
  ``trainable=T`` (w2sray/models/lora.py estimate_params).
- Probes (``train.probe``): nothing trains on the GPU. The features run embeds the splits with
  the frozen backbone, whole on each worker (no ZeRO): weights dtype_bytes P, plus one layer's
  forward activations at the eval batch (nothing is kept for a backward pass), plus the
  overhead (inference_bytes). The probe runs train a 2-way head on the CPU.
- Stage 3 also holds gathered weights while computing: counted as two layers' worth
  (the current one and the prefetched one), 2 * dtype_bytes * P / layers.
- Activations for backprop, after Korthikanti et al. 2022 ("Reducing Activation Recomputation
  in Large Transformer Models", eq. 1): 34 s b h bytes per layer in 16-bit (s tokens, b micro
  batch, h hidden), dropping their 5 a s^2 b attention-score term, which memory-efficient
  attention (PyTorch SDPA, flash attention) does not store; scaled by dtype_bytes / 2. With
  gradient checkpointing only each layer's input (dtype_bytes s b h per layer) plus one layer's
  full activations during recomputation.
- A fixed OVERHEAD_BYTES (1.5 GiB, chosen) for the CUDA context, NCCL buffers and
  fragmentation; the planner then keeps the total within HEADROOM (90%, chosen) of GPU memory.
- A worker on a fraction of a GPU (``gpus_per_worker`` < 1, one-worker runs sharing a device)
  has that fraction of the budget (run_budget_bytes): its process is capped at its share
  (w2sray/train/gpu_share.py), and each process sharing the GPU pays its own overhead.

DeepSpeed may use more than the paper's accounting (e.g. fp32 gradient partitions with bf16);
the headroom is there for that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GiB = 2**30
OVERHEAD_BYTES = int(1.5 * GiB)
HEADROOM = 0.9
ACT_BYTES_PER_TOKEN_HIDDEN_LAYER_16BIT = 34  # Korthikanti et al. 2022, without attention scores


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated bytes on one GPU, by kind."""

    weights: int
    grads: int
    optimizer: int
    gathered: int  # stage 3: gathered full weights of the layers being computed
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.grads
            + self.optimizer
            + self.gathered
            + self.activations
            + self.overhead
        )


def _check(zero_stage: int, workers: int, offload: bool, dtype_bytes: int) -> None:
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0-3, got {zero_stage!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    if offload and zero_stage == 0:
        raise ValueError("offload needs zero_stage >= 1")
    if dtype_bytes not in (2, 4):
        raise ValueError(f"dtype_bytes must be 2 (bf16/fp16) or 4 (fp32), got {dtype_bytes!r}")


def model_state_bytes(
    params: int,
    dtype_bytes: int,
    zero_stage: int,
    workers: int,
    offload: bool,
    layers: int = 1,
    trainable: int | None = None,
) -> tuple[int, int, int, int]:
    """(weights, grads, optimizer, gathered) bytes on one GPU; see the module docstring.
    ``trainable``: the parameters that train when not all do (LoRA: adapters and head, whose
    weights are counted in ``params``); gradients and optimizer states are theirs only."""
    _check(zero_stage, workers, offload, dtype_bytes)
    opt_per_param = 12 if dtype_bytes == 2 else 8
    n_train = params if trainable is None else trainable
    weights = dtype_bytes * params
    grads = dtype_bytes * n_train
    optimizer = opt_per_param * n_train
    if zero_stage >= 1:
        optimizer = math.ceil(optimizer / workers)
    if zero_stage >= 2:
        grads = math.ceil(grads / workers)
    gathered = 0
    if zero_stage == 3:
        weights = math.ceil(weights / workers)
        if workers > 1 or offload:
            gathered = 2 * dtype_bytes * math.ceil(params / max(layers, 1))
    if offload:
        optimizer = 0
        if zero_stage == 3:
            weights = 0
    return weights, grads, optimizer, gathered


def activation_bytes(
    seq_len: int, micro_batch: int, hidden: int, layers: int, grad_ckpt: bool, dtype_bytes: int = 2
) -> int:
    """Activations kept for the backward pass on one GPU; see the module docstring."""
    per_layer_full = ACT_BYTES_PER_TOKEN_HIDDEN_LAYER_16BIT * dtype_bytes // 2
    tokens_hidden = seq_len * micro_batch * hidden
    if grad_ckpt:
        return dtype_bytes * tokens_hidden * layers + per_layer_full * tokens_hidden
    return per_layer_full * tokens_hidden * layers


def inference_bytes(
    params: int,
    dtype_bytes: int,
    seq_len: int,
    micro_batch: int,
    hidden: int,
    overhead: int = OVERHEAD_BYTES,
) -> int:
    """Estimated peak bytes of a forward-only pass (a probe's features run) on one GPU."""
    one_layer = ACT_BYTES_PER_TOKEN_HIDDEN_LAYER_16BIT * dtype_bytes // 2 * seq_len * micro_batch
    return dtype_bytes * params + one_layer * hidden + overhead


def memory_breakdown(
    params: int,
    dtype_bytes: int,
    zero_stage: int,
    workers: int,
    offload: bool,
    seq_len: int,
    micro_batch: int,
    hidden: int,
    layers: int,
    grad_ckpt: bool,
    overhead: int = OVERHEAD_BYTES,
    trainable: int | None = None,
) -> MemoryEstimate:
    weights, grads, optimizer, gathered = model_state_bytes(
        params, dtype_bytes, zero_stage, workers, offload, layers, trainable
    )
    act = activation_bytes(seq_len, micro_batch, hidden, layers, grad_ckpt, dtype_bytes)
    return MemoryEstimate(weights, grads, optimizer, gathered, act, overhead)


def estimate_memory_per_gpu(
    params: int,
    dtype_bytes: int,
    zero_stage: int,
    workers: int,
    offload: bool,
    seq_len: int,
    micro_batch: int,
    hidden: int,
    layers: int,
    grad_ckpt: bool,
    overhead: int = OVERHEAD_BYTES,
    trainable: int | None = None,
) -> int:
    """Estimated peak bytes on each of the run's GPUs (an estimate; see the module docstring).
    ``trainable``: see model_state_bytes (LoRA)."""
    return memory_breakdown(
        params,
        dtype_bytes,
        zero_stage,
        workers,
        offload,
        seq_len,
        micro_batch,
        hidden,
        layers,
        grad_ckpt,
        overhead,
        trainable,
    ).total


@dataclass(frozen=True)
class ResourcePlan:
    workers: int
    zero_stage: int
    offload: bool
    est_bytes_per_gpu: int
    fits: bool
    budget_bytes: int = 0  # HEADROOM * GPU memory
    gpus_per_node: int = 1

    @property
    def nodes(self) -> int:
        return math.ceil(self.workers / self.gpus_per_node)

    def resources(self) -> dict[str, object]:
        """As a spec's per-model ``resources:`` mapping (one GPU per worker)."""
        return {
            "workers": self.workers,
            "gpus_per_worker": 1,
            "zero_stage": self.zero_stage,
            "offload": self.offload,
        }


def worker_counts(
    gpus_per_node: int, max_nodes: int = 1, batch_size: int | None = None
) -> list[int]:
    """Candidate worker counts, fewest first: 1, 2, 4, ... up to a node's GPUs (and the node's
    GPU count itself), then whole nodes; only counts that divide ``batch_size`` (the loop splits
    the global batch evenly over workers)."""
    if gpus_per_node < 1 or max_nodes < 1:
        raise ValueError("gpus_per_node and max_nodes must be >= 1")
    counts = []
    w = 1
    while w < gpus_per_node:
        counts.append(w)
        w *= 2
    counts += [k * gpus_per_node for k in range(1, max_nodes + 1)]
    return [c for c in counts if batch_size is None or batch_size % c == 0]


def plan_run(
    params: int,
    gpu_mem_bytes: int,
    gpus_per_node: int,
    *,
    hidden: int,
    layers: int,
    seq_len: int,
    batch_size: int,
    dtype_bytes: int = 2,
    grad_ckpt: bool = False,
    max_nodes: int = 1,
    headroom: float = HEADROOM,
    overhead: int = OVERHEAD_BYTES,
    trainable: int | None = None,
) -> ResourcePlan:
    """The cheapest layout whose estimate fits in ``headroom`` of each GPU's memory.

    Search order: no offload before offload (a torch optimizer stepping on the CPU is slow);
    then fewer nodes (inter-node links are slow); within that, the lowest ZeRO stage (stages
    0-2 move the same data as plain data parallelism, stage 3 1.5x, ZeRO paper section 7),
    then the fewest workers. ``batch_size`` is the global batch (micro batch = batch / workers).
    When nothing fits, the layout with the smallest estimate, with fits=False.
    """
    budget = int(headroom * gpu_mem_bytes)
    counts = worker_counts(gpus_per_node, max_nodes, batch_size)

    def estimate(stage: int, workers: int, offload: bool) -> int:
        return estimate_memory_per_gpu(
            params,
            dtype_bytes,
            stage,
            workers,
            offload,
            seq_len,
            batch_size // workers,
            hidden,
            layers,
            grad_ckpt,
            overhead,
            trainable,
        )

    tried: list[tuple[int, int, int, bool]] = []
    for offload in (False, True):
        for nodes in range(1, max_nodes + 1):
            tier = [w for w in counts if math.ceil(w / gpus_per_node) == nodes]
            for stage in (1, 2, 3) if offload else (0, 1, 2, 3):
                for workers in tier:
                    est = estimate(stage, workers, offload)
                    if est <= budget:
                        return ResourcePlan(
                            workers, stage, offload, est, True, budget, gpus_per_node
                        )
                    tried.append((est, workers, stage, offload))
    est, workers, stage, offload = min(tried)
    return ResourcePlan(workers, stage, offload, est, False, budget, gpus_per_node)


# Ray counts resources in steps of 0.0001 (w2sray/spec.py MIN_GPU_FRACTION).
_GRANULARITY = 10_000


def run_budget_bytes(gpu_mem_bytes: int, gpus_per_worker: float, headroom: float = HEADROOM) -> int:
    """Bytes one worker's estimate must fit in: ``headroom`` of a GPU, times the worker's share
    when it holds a fraction of one (0.25 of an 80 GiB GPU: 0.9 x 20 GiB). A worker with whole
    GPUs trains on one of them (the loop uses one device per worker)."""
    share = min(float(gpus_per_worker), 1.0) if gpus_per_worker > 0 else 1.0
    return int(headroom * share * gpu_mem_bytes)


def fraction_for(runs_per_gpu: int) -> float:
    """The ``gpus_per_worker`` that packs ``runs_per_gpu`` one-worker runs on one GPU: 1/k
    rounded down to Ray's granularity, so that k of them add up to at most one GPU."""
    if runs_per_gpu < 1:
        raise ValueError(f"runs_per_gpu must be >= 1, got {runs_per_gpu!r}")
    return math.floor(_GRANULARITY / runs_per_gpu) / _GRANULARITY


def runs_per_gpu(est_bytes: int, gpu_mem_bytes: int, headroom: float = HEADROOM) -> int:
    """How many one-worker runs of ``est_bytes`` each fit on one GPU when each holds a
    fraction_for(k) share of it (0 when not even a whole GPU holds one)."""
    if est_bytes <= 0:
        raise ValueError(f"est_bytes must be > 0, got {est_bytes!r}")
    k = int(headroom * gpu_mem_bytes // est_bytes)
    while k >= 1 and est_bytes > run_budget_bytes(gpu_mem_bytes, fraction_for(k), headroom):
        k -= 1
    return k
