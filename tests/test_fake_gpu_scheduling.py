"""Scheduling of GPU runs, on CPU: a real Ray Tune stage (sweep.run_stage) on a multi-node
cluster of fake GPUs (ray.cluster_utils.Cluster), each trial a real Ray Train worker group that
asks for the run's GPUs.

Checked: the stage runs at most cluster GPUs / per-run GPUs trials at once, so a started trial
never waits for GPUs that another trial holds (no queued trial sits on resources); every worker
holds its own GPUs, none shared at the same time on a node; every run finishes.

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

NODES = 2  # fake GPU nodes
GPUS_PER_NODE = 2
WORKERS, GPUS_PER_WORKER = 2, 1  # per run: 2 GPUs
HOLD_S = 3.0  # how long each worker "trains"
PENDING_OK_S = 2.0  # a worker group's GPUs may take this long to be reserved when they are free


def _worker_loop(config: dict) -> None:
    import ray
    import ray.train

    ctx = ray.train.get_context()
    t0 = time.time()
    time.sleep(config["hold_s"])
    row = {
        "key": config["key"],
        "rank": ctx.get_world_rank(),
        "node": ray.get_runtime_context().get_node_id(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "start": t0,
        "end": time.time(),
    }
    path = Path(config["out"]) / f"worker-{config['key']}-{row['rank']}.json"
    path.write_text(json.dumps(row))


def _fake_trial(config: dict, runs: dict, store_uri: str) -> dict:
    """Stand-in for sweep._trial: the run's worker group, sized as build_trainer sizes it."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    key = config["run_key"]
    res = runs[key].resources
    out = os.environ["W2S_FAKE_GPU_OUT"]
    t0 = time.time()
    DataParallelTrainer(
        _worker_loop,
        train_loop_config={"key": key, "out": out, "hold_s": HOLD_S},
        scaling_config=ScalingConfig(
            num_workers=res["workers"],
            use_gpu=res["gpus_per_worker"] > 0,
            resources_per_worker={"CPU": res["cpus_per_worker"], "GPU": res["gpus_per_worker"]},
        ),
        run_config=RunConfig(name=key, storage_path=os.path.join(out, "train")),
    ).fit()
    row = {"key": key, "start": t0, "end": time.time()}
    (Path(out) / f"trial-{key}.json").write_text(json.dumps(row))
    return {"done": 1}


def _watch_placement_groups(stop, seen: dict) -> None:
    """Sample the GPU placement groups (Ray Train worker groups): when each was first seen
    pending and when created, and the most created at once."""
    import ray

    while not stop.is_set():
        now, created = time.time(), 0
        for pg_id, pg in ray.util.placement_group_table().items():
            if not any(b.get("GPU") for b in pg["bundles"].values()):
                continue
            row = seen["pgs"].setdefault(pg_id, {"first": now, "created": None})
            if pg["state"] == "CREATED":
                created += 1
                row["created"] = row["created"] or now
        seen["max_created"] = max(seen["max_created"], created)
        time.sleep(0.1)


def _main(out: str) -> None:
    """In the subprocess: a head (trial drivers, no GPU) and NODES fake-GPU nodes; one stage."""
    import ray
    from ray.cluster_utils import Cluster

    from w2sray import sweep
    from w2sray.runs import plan_sweep
    from w2sray.spec import parse_spec
    from w2sray.store import Store

    os.environ["W2S_FAKE_GPU_OUT"] = out
    spec = parse_spec(
        {
            "name": "fakegpu",
            "storage": os.path.join(out, "store"),
            "datasets": [{"name": "synthetic", "n_gt": 100, "n_weak": 100, "n_test": 100}],
            "models": ["w2s-tiny-1", "w2s-tiny-2"],
            "methods": ["xent"],
            "seeds": [0, 1],
            "resources": {
                "workers": WORKERS,
                "gpus_per_worker": GPUS_PER_WORKER,
                "cpus_per_worker": 1,
            },
        }
    )
    runs = list(plan_sweep(spec).gt)  # 4 runs of 2 workers x 1 GPU: two waves of two
    env = {"env_vars": {**sweep.LOCAL_TRAIN_ENV, "W2S_FAKE_GPU_OUT": out}}
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
        # CPUs are plenty (logical): the GPUs must be what limits the stage.
        for _ in range(NODES):
            cluster.add_node(num_cpus=4, num_gpus=GPUS_PER_NODE)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env=env, log_to_driver=False)
        resources = ray.cluster_resources()
        limit = sweep.concurrency(runs, resources, None)
        assert hasattr(sweep, "_trial")
        sweep._trial = _fake_trial  # run_stage's real Tuner, with the stand-in trainable
        seen: dict = {"pgs": {}, "max_created": 0}
        stop = threading.Event()
        watcher = threading.Thread(target=_watch_placement_groups, args=(stop, seen), daemon=True)
        watcher.start()
        t0 = time.time()
        failed = sweep.run_stage("gt", runs, Store(spec.storage), spec, printer=lambda s: None)
        stop.set()
        watcher.join()
        summary = {
            "placement_groups": seen,
            "cluster": resources,
            "limit": limit,
            "failed": failed,
            "keys": [r.key for r in runs],
            "stage_seconds": time.time() - t0,
        }
        (Path(out) / "summary.json").write_text(json.dumps(summary))
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


def test_stage_runs_what_the_fake_gpus_fit(tmp_path):
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        # a busy 2-core box can take longer than Ray's 30 s to register a node
        env={**os.environ, "RAY_TRAIN_V2_ENABLED": "1", "RAY_raylet_start_wait_time_s": "120"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    per_run = WORKERS * GPUS_PER_WORKER
    assert summary["cluster"]["GPU"] == NODES * GPUS_PER_NODE
    assert summary["cluster"]["CPU"] / per_run > NODES * GPUS_PER_NODE / per_run  # GPUs bind
    assert summary["limit"] == NODES * GPUS_PER_NODE // per_run == 2
    assert summary["failed"] == {}

    keys = summary["keys"]
    trials = {k: json.loads((tmp_path / f"trial-{k}.json").read_text()) for k in keys}
    workers = [json.loads(p.read_text()) for p in tmp_path.glob("worker-*.json")]
    assert len(trials) == 4 and len(workers) == 4 * WORKERS  # all finished, every worker ran

    # Never more trials (drivers) in flight than the GPUs fit...
    spans = [(t["start"], t["end"]) for t in trials.values()]
    assert _max_overlap(spans) <= summary["limit"]
    # ...and they did run side by side (the limit is not 1).
    assert _max_overlap(spans) == summary["limit"]
    # No started trial waited for GPUs another trial held: every worker group's placement group
    # got its GPUs as soon as it asked (a trial started beyond what the GPUs fit would sit
    # with its group pending until another run ended), and never more groups than fit.
    pgs = summary["placement_groups"]
    assert len(pgs["pgs"]) == len(keys), pgs
    for pg in pgs["pgs"].values():
        assert pg["created"] is not None and pg["created"] - pg["first"] <= PENDING_OK_S, pgs
    assert pgs["max_created"] <= summary["limit"], pgs
    # Every worker holds GPU_PER_WORKER GPUs of its own: never one GPU of a node held by two
    # workers at once.
    for w in workers:
        assert len(w["gpu_ids"]) == GPUS_PER_WORKER, w
        assert w["cuda_visible"] == ",".join(w["gpu_ids"]), w  # what CUDA code would see
    for i, a in enumerate(workers):
        for b in workers[i + 1 :]:
            if a["node"] == b["node"] and a["start"] < b["end"] and b["start"] < a["end"]:
                assert not set(a["gpu_ids"]) & set(b["gpu_ids"]), (a, b)


if __name__ == "__main__":
    _main(sys.argv[1])
