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


IMPORT_CHECK = """
import sys, time
from w2sray.train.zero import MUON, import_deepspeed
t = time.perf_counter()
ds = import_deepspeed()
print("seconds", time.perf_counter() - t)
from deepspeed.autotuning import autotuner
print("autotuner_mlflow", autotuner.has_mlflow)
import mlflow  # still importable for everyone else
print("mlflow", mlflow.__name__)
print("muon_masked", "Muon is not used" in (sys.modules[MUON].__doc__ or ""))
# ZeRO-2 and ZeRO-3 engines still build and step around torch's AdamW
import os, torch
os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                  MASTER_PORT="29517")
from w2sray.spec import Resources
from w2sray.train.zero import build_engine
os.environ["W2SRAY_ENGINE_ZERO_STAGE"] = "spec"
for zero in (2, 3):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    res = Resources(zero_stage=zero)
    engine, stage = build_engine(model, opt, sched, 2, 1, res, 1.0, False, False)
    loss = engine(torch.ones(2, 4)).sum()
    engine.backward(loss)
    engine.step()
    print("stage", stage, "trained", engine.global_steps == 1)
"""


def test_deepspeed_imports_without_mlflow_or_muon_and_zero_still_trains():
    """import_deepspeed skips DeepSpeed's autotuner MLflow import and its ZeRO optimizers'
    Muon import (seconds of CPU per worker process) and nothing else: MLflow stays importable,
    and ZeRO-2 and ZeRO-3 engines build and step with torch's AdamW. In a fresh interpreter:
    the masks are about what a new worker process imports."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert lines["autotuner_mlflow"] == "False" and lines["mlflow"] == "mlflow"
    assert lines["muon_masked"] == "True"
    stages = [line for line in out.stdout.splitlines() if line.startswith("stage ")]
    assert stages == ["stage 2 trained True", "stage 3 trained True"]
