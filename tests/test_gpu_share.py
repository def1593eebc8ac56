"""A worker's cap on a shared GPU (w2sray/train/gpu_share.py). The arithmetic runs on CPU; the
cap itself is applied only on a CUDA device (checked on CPU: nothing is capped)."""

from __future__ import annotations

import pytest
import torch

from w2sray.spec import Resources
from w2sray.train.gpu_share import NON_ALLOCATOR_BYTES, limit_gpu_memory, memory_fraction

GiB = 2**30


def test_whole_gpus_and_cpu_are_not_capped():
    for gpus in (0, 0.0, 1, 1.0, 2, 8.0):
        assert memory_fraction(gpus, 80 * GiB) is None


def test_fraction_is_the_share_less_what_a_process_holds_outside_the_allocator():
    # 0.25 of 80 GiB is 20 GiB; 1 GiB of it is the CUDA context and NCCL's buffers.
    assert memory_fraction(0.25, 80 * GiB) == pytest.approx(19 / 80)
    assert memory_fraction(0.5, 80 * GiB, non_allocator_bytes=0) == 0.5
    # Four workers at their caps plus their contexts fit on the GPU together.
    for share, total in ((0.25, 80 * GiB), (0.3333, 24 * GiB), (0.1, 141 * GiB)):
        k = int(1 / share + 1e-9)
        assert k * (memory_fraction(share, total) * total + NON_ALLOCATOR_BYTES) <= total


def test_a_share_smaller_than_a_process_needs_is_refused():
    with pytest.raises(ValueError, match="gpus_per_worker 0.0625 of a 16.0 GiB GPU"):
        memory_fraction(0.0625, 16 * GiB)  # 1 GiB: nothing left for the allocator


def test_nothing_is_capped_on_cpu():
    res = Resources(workers=1, gpus_per_worker=0.25)
    assert limit_gpu_memory(res, torch.device("cpu")) is None
    assert limit_gpu_memory(Resources(gpus_per_worker=0.0), torch.device("cpu")) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cap_applied_on_a_gpu():
    device = torch.device("cuda", 0)
    total = torch.cuda.get_device_properties(device).total_memory
    try:
        frac = limit_gpu_memory(Resources(gpus_per_worker=0.25), device)
        assert frac == memory_fraction(0.25, total)
        with pytest.raises(torch.cuda.OutOfMemoryError):  # more than the share: refused
            torch.empty(int(0.3 * total), dtype=torch.uint8, device=device)
        x = torch.empty(int(0.1 * total), dtype=torch.uint8, device=device)  # within it
        del x
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
