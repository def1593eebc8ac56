"""How many trials a stage runs at once (sweep.concurrency): no trial may wait holding resources."""

from __future__ import annotations

from w2sray.runs import Run
from w2sray.settings import DataRef, ModelRef
from w2sray.spec import Resources, TrainSettings
from w2sray.sweep import concurrency


def _run(workers: int, cpus: float = 1.0, gpus: float = 0.0) -> Run:
    return Run(
        kind="gt",
        dataset=DataRef("d", {}, 8, 8, 8, 0),
        model=ModelRef("m", "w2s-tiny-1"),
        loss="xent",
        loss_params={},
        train=TrainSettings(),
        seed=0,
        resources=Resources(workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus),
    )


def test_cpu_runs_fill_the_cpus():
    assert concurrency([_run(1)] * 5, {"CPU": 2}, None) == 2
    assert concurrency([_run(1)] * 5, {"CPU": 8}, None) == 5  # never more than the runs


def test_largest_run_sets_the_limit():
    # a 2-worker run among 1-worker runs on 2 CPUs: one at a time, or the 2-worker run starves
    assert concurrency([_run(1), _run(2), _run(1)], {"CPU": 2}, None) == 1


def test_gpu_runs_limited_by_gpus():
    runs = [_run(2, cpus=4, gpus=1)] * 10
    assert concurrency(runs, {"CPU": 64, "GPU": 8}, None) == 4
    assert concurrency(runs, {"CPU": 64}, None) == 1  # no GPU node up yet: still one


def test_spec_cap_wins_for_autoscaling_clusters():
    runs = [_run(2, cpus=4, gpus=1)] * 10
    assert concurrency(runs, {"CPU": 4}, 6) == 6
    assert concurrency([_run(1)] * 5, {"CPU": 8}, 2) == 2


def test_fractional_gpus_count_as_fractions():
    # 0.25 GPU per one-worker run: four runs per GPU, 16 on 4 GPUs, when the CPUs allow it.
    runs = [_run(1, cpus=0.25, gpus=0.25)] * 20
    assert concurrency(runs, {"CPU": 8, "GPU": 4}, None) == 16
    assert concurrency(runs, {"CPU": 2, "GPU": 4}, None) == 8  # CPUs bind: 2 / 0.25
    assert concurrency(runs[:5], {"CPU": 8, "GPU": 4}, None) == 5  # never more than the runs
    assert concurrency([_run(1, gpus=0.5)] * 9, {"CPU": 64, "GPU": 3}, None) == 6
    # The largest run still sets the limit: a whole-GPU run among fractional ones.
    mixed = [_run(1, gpus=0.25)] * 6 + [_run(1, gpus=1)]
    assert concurrency(mixed, {"CPU": 64, "GPU": 2}, None) == 2
    # No floating-point shortfall: 0.1 x 10 is one GPU.
    assert concurrency([_run(1, gpus=0.1)] * 30, {"CPU": 64, "GPU": 1}, None) == 10
    # A share that is not 1/n: Ray packs floor(1 / 0.4) = 2 per GPU, not 4 / 0.4 = 10 in all.
    assert concurrency([_run(1, gpus=0.4)] * 20, {"CPU": 64, "GPU": 4}, None) == 8
