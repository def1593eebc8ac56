"""How many trials a stage runs at once (sweep.concurrency): no trial may wait holding resources."""

from __future__ import annotations

from w2sray.runs import Run
from w2sray.sweep import concurrency


def _run(workers: int, cpus: float = 1.0, gpus: float = 0.0) -> Run:
    return Run(
        kind="gt",
        dataset={"name": "d"},
        model={"name": "m"},
        loss="xent",
        loss_params={},
        train={},
        seed=0,
        resources={"workers": workers, "cpus_per_worker": cpus, "gpus_per_worker": gpus},
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
