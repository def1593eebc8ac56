"""Faults with real processes: a training worker SIGKILLed mid-run resumes from its checkpoint
(ZeRO-3 over 2 workers: every rank's shard saved and loaded), inside a pack of runs
(w2sray/packing.py): the pack's finished run is not trained again, the killed one resumes from
its own checkpoint."""

from __future__ import annotations

import glob
import json
import os
import signal
import threading
import time

import numpy as np
import psutil
import yaml

from w2sray.artifacts import TEST_PREDICTIONS
from w2sray.packing import make_packs, pack_key
from w2sray.runs import Plan, plan_sweep
from w2sray.spec import load_spec
from w2sray.store import Store
from w2sray.sweep import execute
from w2sray.train import checkpoint


def _kill_worker_after_checkpoints(train_dir: str, key: str, found: dict, deadline: float) -> None:
    """Wait for run ``key``'s first checkpoints, then SIGKILL a Ray Train worker process."""
    try:
        _kill_loop(train_dir, key, found, deadline)
    except Exception as exc:  # surfaced by the test's assertion message
        found["error"] = repr(exc)


def _checkpoints_of(train_dir: str, key: str) -> list[str]:
    out = []
    for path in glob.glob(os.path.join(train_dir, "checkpoint_*")):
        try:
            with open(os.path.join(path, checkpoint.progress_file(0))) as fh:
                if json.load(fh).get("key") == key:
                    out.append(path)
        except (OSError, ValueError):  # being written
            continue
    return out


def _kill_loop(train_dir: str, key: str, found: dict, deadline: float) -> None:
    while time.time() < deadline:
        # Ray Train registers a reported checkpoint on its controller's next poll: let a few
        # land and settle before the kill, as a real failure would find them.
        if len(_checkpoints_of(train_dir, key)) >= 3:
            time.sleep(1.0)
            # Only this test's cluster: its raylet, and so its workers, descend from this
            # process. With one run in flight, the Train workers are the target run's: kill
            # ONE of them (the others are torn down by Ray Train, as on a lost node).
            for proc in psutil.Process().children(recursive=True):
                try:
                    cmdline = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                if "RayTrainWorker" in cmdline:
                    os.kill(proc.pid, signal.SIGKILL)
                    found["killed_at"] = time.time()
                    found["pid"] = proc.pid
                    return
        time.sleep(0.05)


def _checkpoint_at(train_dir: str, key: str, step: int) -> str:
    """The Ray Train checkpoint folder that holds run ``key``'s state after ``step`` steps."""
    for path in _checkpoints_of(train_dir, key):
        with open(os.path.join(path, checkpoint.progress_file(0))) as fh:
            if json.load(fh)["step"] == step:
                return path
    raise AssertionError(f"no checkpoint of step {step} in {os.listdir(train_dir)}")


def test_killed_worker_resumes_zero3_shards_of_every_rank(ray_cluster, tmp_path):
    """ZeRO-3 over 2 workers: every rank saves its own shard of the weights and optimizer
    state. Two runs of model a (seeds 0 and 1) train as one pack; one worker is SIGKILLed in
    the middle of the second; Ray Train restarts the pack's worker group, which skips the
    finished first run and restarts the second from its own last checkpoint, every rank
    loading its shard; the result equals an uninterrupted run's."""
    workers = 2
    raw = {
        "name": "faults",
        "storage": str(tmp_path / "store"),
        "datasets": [{"name": "synthetic", "n_gt": 2048, "n_weak": 256, "n_test": 200}],
        # only the first GT run (w2s-tiny-3, 64 steps, ZeRO-3 on 2 workers) is trained: the
        # one that gets killed
        "models": [
            {
                "name": "a",
                "source": "w2s-tiny-3",
                "resources": {"workers": workers, "zero_stage": 3},
            },
            {"name": "b", "source": "w2s-tiny-1"},
        ],
        "methods": ["xent"],
        "seeds": [0, 1],
        "train": {"epochs": 1, "batch_size": 32, "max_length": 24},
        "resources": {"workers": 1, "max_failures": 1, "checkpoint_every": 4},
        "max_concurrent_trials": 1,  # one trial: both runs of a in one pack
    }
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_path)
    plan = plan_sweep(spec)
    first, target = [r for r in plan.gt if r.model.name == "a"]
    assert (target.resources.workers, target.resources.zero_stage) == (workers, 3)
    (pack,) = make_packs([first, target], slots=1)
    assert pack == [first, target]
    store = Store(spec.storage)
    train_dir = os.path.join(spec.storage, "ray", "train", pack_key(pack))
    found: dict = {}
    killer = threading.Thread(
        target=_kill_worker_after_checkpoints,
        args=(train_dir, target.key, found, time.time() + 900),
        daemon=True,
    )
    killer.start()
    outcome = execute(spec, Plan(gt=(first, target), transfer=()), store, printer=lambda s: None)
    killer.join(timeout=5)

    assert "pid" in found, f"worker never killed: {found} {outcome.failed}"
    assert not psutil.pid_exists(found["pid"]) or psutil.Process(found["pid"]).status() in (
        psutil.STATUS_ZOMBIE,
        psutil.STATUS_DEAD,
    )
    assert outcome.failed == {}
    assert sorted(outcome.done) == sorted([first.key, target.key])
    # the first run finished before the kill and was not trained again after the restart
    done_first = json.loads((tmp_path / "store" / "runs" / first.key / "DONE.json").read_text())
    assert done_first["finished_at"] < found["killed_at"]
    assert store.read_json(first.key, "metrics.json")["resumed_from_step"] == 0
    m = store.read_json(target.key, "metrics.json")
    assert (m["steps"], m["workers"], m["zero_stage"]) == (64, workers, 3)
    assert 4 <= m["resumed_from_step"] < 64 and m["resumed_from_step"] % 4 == 0
    # The checkpoint resumed from holds every rank's ZeRO-3 shard: model states (its part of
    # the partitioned weights) and optimizer states, one file pair per rank.
    resumed_from = _checkpoint_at(train_dir, target.key, m["resumed_from_step"])
    ckpt = os.path.join(resumed_from, checkpoint.TAG)
    names = set(os.listdir(ckpt))
    for rank in range(workers):
        assert f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" in names, sorted(names)
        assert f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" in names, sorted(names)
    assert not any(f"zero_pp_rank_{workers}_" in n for n in names), sorted(names)
    # Resuming restored everything (weights, optimizer, lr schedule, position in the data):
    # the run's predictions equal an uninterrupted run's (CPU, no dropout, gloo's 2-rank
    # reductions in a fixed order: deterministic).
    clean = Store(str(tmp_path / "clean"))
    assert execute(spec, Plan(gt=(target,), transfer=()), clean, printer=lambda s: None).done
    resumed = store.read_parquet(target.key, TEST_PREDICTIONS)
    uninterrupted = clean.read_parquet(target.key, TEST_PREDICTIONS)
    found["max_abs_diff"] = float(np.max(np.abs(resumed["p1"] - uninterrupted["p1"])))
    assert np.allclose(resumed["p1"], uninterrupted["p1"], atol=1e-5), found
    assert m["acc"] == clean.read_json(target.key, "metrics.json")["acc"]
    assert m["train_loss"] == clean.read_json(target.key, "metrics.json")["train_loss"]
    print(f"resumed from step {m['resumed_from_step']}; {found}")


def test_killed_lora_run_resumes_from_a_checkpoint_of_its_adapters(ray_cluster, tmp_path):
    """LoRA (train.lora) over 2 workers with ZeRO-2: checkpoints hold only the trainable state
    (adapters, head, their optimizer state); a worker SIGKILLed mid-run restarts the run, which
    rebuilds the frozen base from the model's source, loads that state and ends with the
    predictions of an uninterrupted run."""
    import torch

    workers = 2
    raw = {
        "name": "lora_faults",
        "storage": str(tmp_path / "store"),
        "datasets": [{"name": "synthetic", "n_gt": 1024, "n_weak": 128, "n_test": 128}],
        # only a's GT run is trained: the one that gets killed
        "models": [{"name": "a", "source": "w2s-tiny-2"}, {"name": "b", "source": "w2s-tiny-3"}],
        "methods": ["xent"],
        "seeds": [0],
        "train": {"epochs": 2, "batch_size": 32, "max_length": 24, "lora": {"r": 4}},
        "resources": {
            "workers": workers, "zero_stage": 2, "max_failures": 1, "checkpoint_every": 4,
        },
    }  # fmt: skip
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_path)
    target = plan_sweep(spec).gt[0]
    assert target.model.name == "a"
    store = Store(spec.storage)
    train_dir = os.path.join(spec.storage, "ray", "train", pack_key([target]))
    found: dict = {}
    killer = threading.Thread(
        target=_kill_worker_after_checkpoints,
        args=(train_dir, target.key, found, time.time() + 600),
        daemon=True,
    )
    killer.start()
    outcome = execute(spec, Plan(gt=(target,), transfer=()), store, printer=lambda s: None)
    killer.join(timeout=5)

    assert "pid" in found, f"worker never killed: {found} {outcome.failed}"
    assert outcome.failed == {} and outcome.done == [target.key]
    m = store.read_json(target.key, "metrics.json")
    assert (m["steps"], m["workers"], m["engine_zero_stage"]) == (64, workers, 2)
    assert m["trainable_params"] < m["params"] / 5  # adapters and head only
    assert 4 <= m["resumed_from_step"] < 64 and m["resumed_from_step"] % 4 == 0
    # The checkpoint resumed from holds the trainable parameters only, no frozen base weight.
    ckpt = os.path.join(
        _checkpoint_at(train_dir, target.key, m["resumed_from_step"]), checkpoint.TAG
    )
    state = torch.load(
        os.path.join(ckpt, "mp_rank_00_model_states.pt"), map_location="cpu", weights_only=False
    )["module"]
    assert state and all("lora_" in n or n.startswith("head.") for n in state), sorted(state)
    assert any("lora_B" in n for n in state)
    clean = Store(str(tmp_path / "clean"))
    assert execute(spec, Plan(gt=(target,), transfer=()), clean, printer=lambda s: None).done
    resumed = store.read_parquet(target.key, TEST_PREDICTIONS)["p1"]
    uninterrupted = clean.read_parquet(target.key, TEST_PREDICTIONS)["p1"]
    found["max_abs_diff"] = float(np.max(np.abs(resumed - uninterrupted)))
    assert np.allclose(resumed, uninterrupted, atol=1e-5), found
    print(f"LoRA resumed from step {m['resumed_from_step']}; {found}")
