"""Scheduling of GPU runs, on CPU: real Ray Tune stages (sweep.run_stage) on a multi-node
cluster of fake GPUs (ray.cluster_utils.Cluster), each trial a real Ray Train worker group that
asks for the run's GPUs. Two stages on the same cluster:

- whole GPUs (2 workers x 1 GPU per run): the stage runs at most cluster GPUs / per-run GPUs
  trials at once, so a started trial never waits for GPUs that another trial holds (no queued
  trial sits on resources); every worker holds its own GPUs, none shared at the same time on a
  node; every run finishes.
- fractions (1 worker x 0.5 GPU per run, more runs than fit): at most floor(GPUs / 0.5) = 8
  runs in flight, all 8 side by side, each worker given 0.5 of one GPU, and at every instant
  the shares on each (node, GPU) add up to at most one GPU. (0.5, not 0.25: 16 runs in flight
  are 48 processes, minutes on a busy 2-core box; the arithmetic is the same.)

The cluster runs in a subprocess (this file, run as a script): a pytest process may hold one Ray
connection, the session's (tests/conftest.py). DeepSpeed cannot run on fake GPUs, so the trial is
a stand-in that builds the run's Ray Train worker group exactly as train/trainer.py sizes it
(num_workers x {CPU: cpus_per_worker, GPU: gpus_per_worker}) with a plain DataParallelTrainer
(a TorchTrainer would start NCCL on the fake GPUs) whose workers record what they were given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

NODES = 2  # fake GPU nodes
GPUS_PER_NODE = 2
CPUS_PER_NODE = 4  # logical: plenty, so that GPUs are what limits both stages
WORKERS, GPUS_PER_WORKER = 2, 1  # whole-GPU stage, per run: 2 GPUs
HOLD_S = 3.0  # how long each worker "trains"
PENDING_OK_S = 2.0  # a worker group's GPUs may take this long to be reserved when they are free
FRACTION = 0.5  # fractional stage: one-worker runs, two per GPU
FRACTION_CPUS = 0.25  # per worker: 8 CPUs fit 32 such runs, the GPUs 8
FRACTION_MODELS = ["w2s-tiny-1", "w2s-tiny-2", "w2s-tiny-3"]
FRACTION_SEEDS = [100, 101, 102]  # 9 runs: one more than the 8 that fit
# A fractional worker holds until this many workers of its stage have started (or the deadline
# passes): on a busy 2-core box starting 8 worker groups takes longer than a fixed hold, and the
# test must see whether all that fit do run side by side.
BARRIER_DEADLINE_S = 60.0


def _worker_loop(config: dict) -> None:
    import ray
    import ray.train

    ctx = ray.train.get_context()
    t0 = time.time()
    rank = ctx.get_world_rank()
    if config["barrier"]:
        started = Path(config["out"]) / "started"
        started.mkdir(exist_ok=True)
        (started / f"{config['key']}-{rank}").touch()
        deadline = t0 + BARRIER_DEADLINE_S
        while len(os.listdir(started)) < config["barrier"] and time.time() < deadline:
            time.sleep(0.2)
    time.sleep(config["hold_s"])
    row = {
        "key": config["key"],
        "rank": rank,
        "node": ray.get_runtime_context().get_node_id(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "assigned": ray.get_runtime_context().get_assigned_resources(),
        "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "start": t0,
        "end": time.time(),
    }
    path = Path(config["out"]) / f"worker-{config['key']}-{rank}.json"
    path.write_text(json.dumps(row))


def _fake_trial(config: dict, runs: dict, store_uri: str) -> dict:
    """Stand-in for sweep._trial: the run's worker group, sized as build_trainer sizes it."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    (key,) = config["runs"]
    res = runs[key].resources
    out = str(Path(store_uri).parent)  # the stage's folder (each stage has its own store)
    stage = json.loads((Path(out) / "stage.json").read_text())
    t0 = time.time()
    DataParallelTrainer(
        _worker_loop,
        train_loop_config={"key": key, "out": out, **stage},
        scaling_config=ScalingConfig(
            num_workers=res.workers,
            use_gpu=res.gpus_per_worker > 0,
            resources_per_worker={"CPU": res.cpus_per_worker, "GPU": res.gpus_per_worker},
        ),
        run_config=RunConfig(name=key, storage_path=os.path.join(out, "train")),
    ).fit()
    row = {"key": key, "start": t0, "end": time.time()}
    (Path(out) / f"trial-{key}.json").write_text(json.dumps(row))
    return {"done": 1}


def _watch_placement_groups(stop, seen: dict, before: set) -> None:
    """Sample the GPU placement groups (Ray Train worker groups) of one stage, not those in
    ``before`` (an earlier stage's): when each was first seen pending and when created, and the
    most created at once."""
    import ray

    while not stop.is_set():
        now, created = time.time(), 0
        for pg_id, pg in ray.util.placement_group_table().items():
            if pg_id in before or not any(b.get("GPU") for b in pg["bundles"].values()):
                continue
            row = seen["pgs"].setdefault(pg_id, {"first": now, "created": None})
            if pg["state"] == "CREATED":
                created += 1
                row["created"] = row["created"] or now
        seen["max_created"] = max(seen["max_created"], created)
        time.sleep(0.1)


def _stage(out: Path, resources: dict, models: list[str], seeds: list[int], stage: dict) -> dict:
    """Plan a ground-truth stage with ``resources`` per run and run it through run_stage with the
    stand-in trainable, watching the placement groups; what happened, for the test to check."""
    import ray

    from w2sray import sweep
    from w2sray.runs import plan_sweep
    from w2sray.spec import parse_spec
    from w2sray.store import Store

    out.mkdir()
    (out / "stage.json").write_text(json.dumps(stage))
    spec = parse_spec(
        {
            "name": "fakegpu",
            "storage": str(out / "store"),
            "datasets": [{"name": "synthetic", "n_gt": 100, "n_weak": 100, "n_test": 100}],
            "models": models,
            "methods": ["xent"],
            "seeds": seeds,
            "resources": resources,
            # one run per trial: this checks how runs' worker groups share the GPUs (packs of
            # short runs, w2sray/packing.py, hold one worker group at a time the same way)
            "packing": {"max_runs": 1},
        }
    )
    runs = list(plan_sweep(spec).gt)
    resources_now = ray.cluster_resources()
    limit = sweep.concurrency(runs, resources_now, None)
    seen: dict = {"pgs": {}, "max_created": 0}
    before = set(ray.util.placement_group_table())
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch_placement_groups, args=(stop, seen, before), daemon=True
    )
    watcher.start()
    t0 = time.time()
    failed = sweep.run_stage("gt", runs, Store(spec.storage), spec, printer=lambda s: None)
    stop.set()
    watcher.join()
    summary = {
        "placement_groups": seen,
        "cluster": resources_now,
        "limit": limit,
        "failed": failed,
        "keys": [r.key for r in runs],
        "stage_seconds": time.time() - t0,
    }
    (out / "summary.json").write_text(json.dumps(summary))
    return summary


def _main(out: str) -> None:
    """In the subprocess: a head (trial drivers, no GPU) and NODES fake-GPU nodes; two stages."""
    import ray
    from ray.cluster_utils import Cluster

    from w2sray import sweep

    env = {"env_vars": dict(sweep.LOCAL_TRAIN_ENV)}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "num_gpus": 0,
            "resources": {sweep.DRIVER_RESOURCE: 100},
            "include_dashboard": False,
        },
    )
    try:
        for _ in range(NODES):
            cluster.add_node(num_cpus=CPUS_PER_NODE, num_gpus=GPUS_PER_NODE)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env=env, log_to_driver=False)
        assert hasattr(sweep, "_trial")
        sweep._trial = _fake_trial  # run_stage's real Tuner, with the stand-in trainable
        whole = {"workers": WORKERS, "gpus_per_worker": GPUS_PER_WORKER, "cpus_per_worker": 1}
        # 4 runs of 2 workers x 1 GPU: two waves of two
        models = ["w2s-tiny-1", "w2s-tiny-2"]
        _stage(Path(out) / "whole", whole, models, [0, 1], {"hold_s": HOLD_S, "barrier": 0})
        frac = {"workers": 1, "gpus_per_worker": FRACTION, "cpus_per_worker": FRACTION_CPUS}
        fit = int(NODES * GPUS_PER_NODE / FRACTION)
        stage = {"hold_s": 1.0, "barrier": fit}
        _stage(Path(out) / "fraction", frac, FRACTION_MODELS, FRACTION_SEEDS, stage)
    finally:
        ray.shutdown()
        cluster.shutdown()


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, d in events:  # an end sorts before a start at the same instant
        now += d
        peak = max(peak, now)
    return peak


@pytest.fixture(scope="module")
def cluster_out(tmp_path_factory) -> Path:
    """Both stages, run once in one subprocess cluster (starting it is most of the cost)."""
    out = tmp_path_factory.mktemp("fake-gpu")
    proc = subprocess.run(
        [sys.executable, __file__, str(out)],
        capture_output=True,
        text=True,
        timeout=360,
        # a busy 2-core box can take longer than Ray's 30 s to register a node
        env={**os.environ, "RAY_TRAIN_V2_ENABLED": "1", "RAY_raylet_start_wait_time_s": "120"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


def _read_stage(out: Path) -> tuple[dict, dict, list[dict]]:
    summary = json.loads((out / "summary.json").read_text())
    trials = {k: json.loads((out / f"trial-{k}.json").read_text()) for k in summary["keys"]}
    workers = [json.loads(p.read_text()) for p in out.glob("worker-*.json")]
    return summary, trials, workers


def _check_no_waiting_groups(summary: dict) -> None:
    """No started trial waited for GPUs another trial held: every worker group's placement group
    got its GPUs as soon as it asked (a trial started beyond what the GPUs fit would sit with
    its group pending until another run ended), and never more groups than fit."""
    pgs = summary["placement_groups"]
    assert len(pgs["pgs"]) == len(summary["keys"]), pgs
    for pg in pgs["pgs"].values():
        assert pg["created"] is not None and pg["created"] - pg["first"] <= PENDING_OK_S, pgs
    assert pgs["max_created"] <= summary["limit"], pgs


def test_stage_runs_what_the_fake_gpus_fit(cluster_out):
    summary, trials, workers = _read_stage(cluster_out / "whole")
    per_run = WORKERS * GPUS_PER_WORKER
    assert summary["cluster"]["GPU"] == NODES * GPUS_PER_NODE
    assert summary["cluster"]["CPU"] / per_run > NODES * GPUS_PER_NODE / per_run  # GPUs bind
    assert summary["limit"] == NODES * GPUS_PER_NODE // per_run == 2
    assert summary["failed"] == {}
    assert len(trials) == 4 and len(workers) == 4 * WORKERS  # all finished, every worker ran

    # Never more trials (drivers) in flight than the GPUs fit...
    spans = [(t["start"], t["end"]) for t in trials.values()]
    assert _max_overlap(spans) <= summary["limit"]
    # ...and they did run side by side (the limit is not 1).
    assert _max_overlap(spans) == summary["limit"]
    _check_no_waiting_groups(summary)
    # Every worker holds GPU_PER_WORKER GPUs of its own: never one GPU of a node held by two
    # workers at once.
    for w in workers:
        assert len(w["gpu_ids"]) == GPUS_PER_WORKER, w
        assert w["cuda_visible"] == ",".join(w["gpu_ids"]), w  # what CUDA code would see
    for i, a in enumerate(workers):
        for b in workers[i + 1 :]:
            if a["node"] == b["node"] and a["start"] < b["end"] and b["start"] < a["end"]:
                assert not set(a["gpu_ids"]) & set(b["gpu_ids"]), (a, b)


def _peak_share_per_device(workers: list[dict]) -> dict[tuple[str, str], float]:
    """The most GPU, summed over the workers holding a share of it at one instant, of every
    (node, GPU id) a worker was given."""
    events: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for w in workers:
        share = w["assigned"]["GPU"] / len(w["gpu_ids"])
        for g in w["gpu_ids"]:
            device = events.setdefault((w["node"], g), [])
            device += [(w["start"], share), (w["end"], -share)]
    peaks = {}
    for device, evs in events.items():
        now = peak = 0.0
        for _, d in sorted(evs):  # an end (negative) sorts before a start at the same instant
            now += d
            peak = max(peak, now)
        peaks[device] = peak
    return peaks


def test_fractional_runs_pack_without_oversubscribing(cluster_out):
    summary, trials, workers = _read_stage(cluster_out / "fraction")
    gpus = NODES * GPUS_PER_NODE
    fit = int(gpus / FRACTION)  # 8
    assert len(summary["keys"]) == len(FRACTION_MODELS) * len(FRACTION_SEEDS) > fit
    # The GPU shares bind, not the CPUs; sweep.concurrency counts fractions.
    assert summary["cluster"]["CPU"] / FRACTION_CPUS > fit
    assert summary["limit"] == fit == 8
    assert summary["failed"] == {}
    assert len(trials) == len(summary["keys"]) and len(workers) == len(summary["keys"])

    # At most floor(GPUs / fraction) runs in flight, and that many did run side by side.
    assert _max_overlap([(t["start"], t["end"]) for t in trials.values()]) == fit
    assert _max_overlap([(w["start"], w["end"]) for w in workers]) == fit
    _check_no_waiting_groups(summary)
    # Each worker was given a share of one GPU, which CUDA code would see as its only device.
    for w in workers:
        assert w["assigned"]["GPU"] == pytest.approx(FRACTION), w
        assert len(w["gpu_ids"]) == 1 and w["cuda_visible"] == w["gpu_ids"][0], w
    # No device oversubscribed: at every instant the shares on each (node, GPU) add up to at
    # most one GPU; with 8 runs in flight on 4 GPUs, each was full (two runs) at some point.
    peaks = _peak_share_per_device(workers)
    assert len(peaks) == gpus, peaks
    assert all(p <= 1.0 + 1e-9 for p in peaks.values()), peaks
    assert all(p == pytest.approx(1.0) for p in peaks.values()), peaks


if __name__ == "__main__":
    _main(sys.argv[1])
