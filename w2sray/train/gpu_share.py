"""A worker's share of a GPU that other runs' workers use at the same time.

With ``gpus_per_worker`` a fraction (0.25: four one-worker runs per GPU), Ray reserves that
share of one GPU for the worker and sets CUDA_VISIBLE_DEVICES to it, but enforces nothing: any
process may allocate all of the device's memory, and one run growing past its share would make
its neighbours fail with out-of-memory errors. So each such worker caps its PyTorch caching
allocator at its share (``torch.cuda.set_per_process_memory_fraction``): a run that outgrows it
fails alone, with an out-of-memory error of its own.

The cap leaves out what every process holds outside the caching allocator (its CUDA context,
NCCL's buffers, cuBLAS handles): NON_ALLOCATOR_BYTES per process, so that the workers sharing
a GPU, each at its cap, still fit on it together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from w2sray.spec import Resources

# Device memory a process uses outside torch's caching allocator: the CUDA context (a few
# hundred MiB with lazy module loading), NCCL communicator buffers, library handles. Chosen,
# within the planner's 1.5 GiB per-process overhead (w2sray/plan_resources.py OVERHEAD_BYTES).
NON_ALLOCATOR_BYTES = 2**30


def memory_fraction(
    gpus_per_worker: float, total_bytes: int, non_allocator_bytes: int = NON_ALLOCATOR_BYTES
) -> float | None:
    """The fraction of the GPU's memory the worker's caching allocator may hold, or None when
    the worker owns whole GPUs (or none): ``gpus_per_worker`` of ``total_bytes`` less what the
    process holds outside the allocator. Raises ValueError when the share leaves nothing."""
    share = float(gpus_per_worker)
    if not 0 < share < 1:
        return None
    usable = share * total_bytes - non_allocator_bytes
    if usable <= 0:
        raise ValueError(
            f"gpus_per_worker {share:g} of a {total_bytes / 2**30:.1f} GiB GPU is "
            f"{share * total_bytes / 2**30:.2f} GiB, no more than a process needs outside "
            f"PyTorch's allocator ({non_allocator_bytes / 2**30:.1f} GiB): use a larger share"
        )
    return usable / total_bytes


def limit_gpu_memory(resources: Resources, device: Any) -> float | None:
    """Cap this process's allocator on ``device`` at the worker's share (memory_fraction) when
    it is a fraction of a CUDA GPU; return the cap, or None when nothing was capped (whole GPUs,
    CPU)."""
    import torch

    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    frac = memory_fraction(resources.gpus_per_worker, total)
    if frac is not None:
        torch.cuda.set_per_process_memory_fraction(frac, device)
    return frac
