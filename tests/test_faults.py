"""Faults with real processes: a training worker SIGKILLed mid-run resumes from its checkpoint."""

from __future__ import annotations

import glob
import os
import signal
import threading
import time

import numpy as np
import psutil
import yaml

from w2sray.runs import Plan, plan_sweep
from w2sray.spec import load_spec
from w2sray.store import Store
from w2sray.sweep import execute


def _kill_worker_after_checkpoints(train_dir: str, found: dict, deadline: float) -> None:
    """Wait for the run's first checkpoints, then SIGKILL its Ray Train worker process."""
    try:
        _kill_loop(train_dir, found, deadline)
    except Exception as exc:  # surfaced by the test's assertion message
        found["error"] = repr(exc)


def _kill_loop(train_dir: str, found: dict, deadline: float) -> None:
    while time.time() < deadline:
        # Ray Train registers a reported checkpoint on its controller's next poll: let a few
        # land and settle before the kill, as a real failure would find them.
        if len(glob.glob(os.path.join(train_dir, "checkpoint_*"))) >= 3:
            time.sleep(1.0)
            # Only this test's cluster: its raylet, and so its workers, descend from this
            # process. With one run in flight, the Train worker is the target run's.
            for proc in psutil.Process().children(recursive=True):
                try:
                    cmdline = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                if "RayTrainWorker" in cmdline:
                    os.kill(proc.pid, signal.SIGKILL)
                    found["killed_at"] = time.time()
                    found["pid"] = proc.pid
            if "pid" in found:
                return
        time.sleep(0.05)


def test_killed_worker_resumes_from_last_checkpoint(ray_cluster, tmp_path):
    raw = {
        "name": "faults",
        "storage": str(tmp_path / "store"),
        "datasets": [{"name": "synthetic", "n_gt": 4096, "n_weak": 256, "n_test": 200}],
        # the first GT run (w2s-tiny-3, 128 steps) is the one that gets killed
        "models": [{"name": "a", "source": "w2s-tiny-3"}, {"name": "b", "source": "w2s-tiny-1"}],
        "methods": ["xent"],
        "seeds": [0],
        "train": {"epochs": 1, "batch_size": 32, "max_length": 24},
        "resources": {"workers": 1, "max_failures": 1, "checkpoint_every": 4},
        "max_concurrent_trials": 1,  # one run at a time: the killed worker is surely its own
    }
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_path)
    plan = plan_sweep(spec)
    target = plan.gt[0]
    assert target.model["name"] == "a"
    store = Store(spec.storage)
    found: dict = {}
    killer = threading.Thread(
        target=_kill_worker_after_checkpoints,
        args=(os.path.join(spec.storage, "ray", "train", target.key), found, time.time() + 600),
        daemon=True,
    )
    killer.start()
    outcome = execute(spec, plan, store, printer=lambda s: None)
    killer.join(timeout=5)

    assert "pid" in found, f"worker never killed: {found}"
    assert not psutil.pid_exists(found["pid"]) or psutil.Process(found["pid"]).status() in (
        psutil.STATUS_ZOMBIE,
        psutil.STATUS_DEAD,
    )
    assert outcome.failed == {}
    assert all(store.is_complete(r.key) for r in plan.all_runs())
    m = store.read_json(target.key, "metrics.json")
    assert m["steps"] == 128
    assert 4 <= m["resumed_from_step"] < 128 and m["resumed_from_step"] % 4 == 0
    # Resuming restored everything (weights, optimizer, lr schedule, position in the data):
    # the run's predictions equal an uninterrupted run's (CPU, no dropout: deterministic).
    clean = Store(str(tmp_path / "clean"))
    assert execute(spec, Plan(gt=(target,), transfer=()), clean, printer=lambda s: None).done
    resumed = store.read_parquet(target.key, "test_predictions.parquet")
    uninterrupted = clean.read_parquet(target.key, "test_predictions.parquet")
    assert np.allclose(resumed["p1"], uninterrupted["p1"], atol=1e-5)
    assert m["acc"] == clean.read_json(target.key, "metrics.json")["acc"]
    # the other runs never restarted
    for run in plan.all_runs():
        if run.key != target.key:
            assert store.read_json(run.key, "metrics.json")["resumed_from_step"] == 0
