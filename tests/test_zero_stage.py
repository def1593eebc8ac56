"""The ZeRO stage a run's DeepSpeed engine is built with (w2sray/train/zero.py engine_stage):
stage 0 for one fp32 CPU worker, where ZeRO partitions nothing and only adds copies
(benchmarks/RESULTS.md section 7); the spec's stage everywhere else."""

from __future__ import annotations

import pytest

from w2sray.train.zero import KEEP_STAGE_ENV, deepspeed_config, engine_stage


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_one_fp32_cpu_worker_trains_without_zero(stage, monkeypatch):
    monkeypatch.delenv(KEEP_STAGE_ENV, raising=False)
    assert engine_stage(stage, world_size=1, gpu=False, bf16=False, offload=False) == 0
    cfg = deepspeed_config(
        32, 1, engine_stage(stage, 1, False, False, False), 1.0, False, gpu=False
    )
    assert cfg["zero_optimization"] == {"stage": 0}


@pytest.mark.parametrize(
    "world, gpu, bf16, offload",
    [(2, False, False, False), (1, True, False, False), (1, False, True, False),
     (1, False, False, True), (4, True, True, False)],
)  # fmt: skip
def test_spec_stage_kept_where_zero_does_something(world, gpu, bf16, offload, monkeypatch):
    monkeypatch.delenv(KEEP_STAGE_ENV, raising=False)
    for stage in (1, 2, 3):
        assert engine_stage(stage, world, gpu, bf16, offload) == stage


def test_environment_keeps_the_spec_stage(monkeypatch):
    monkeypatch.setenv(KEEP_STAGE_ENV, "spec")
    assert engine_stage(2, world_size=1, gpu=False, bf16=False, offload=False) == 2
