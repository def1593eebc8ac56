"""Build the Ray Train TorchTrainer (Train V2) that trains one run, or a pack of runs."""

from __future__ import annotations

import time
from typing import Any

from w2sray.runs import Run
from w2sray.store import Store


def build_trainer(
    runs: Run | list[Run],
    store: Store,
    in_tune: bool = True,
    wait_since: float | None = None,
    wait_grace: float | None = None,
    leases: dict[str, str] | None = None,
) -> Any:
    """A TorchTrainer for one run (its kind's entry point: w2sray/train/entries.py) or for a
    pack of runs with the same resources (``pack_loop_per_worker``: w2sray/packing.py), each
    worker running DeepSpeed.

    The Train run's name is the run key (a pack's: w2sray.packing.pack_key), so a retried
    trial finds its own state again, and its metrics reach Tune through TuneReportCallback
    (rank 0's, already reduced across workers; a pack reports once per run). ``wait_since``
    (a dataflow pack, w2sray/dataflow.py; always run as a pack): each run first waits for its
    inputs in the store, and an input's failure recorded at or after it fails the run;
    ``leases``: every run's pack's lease (w2sray.dataflow.pack_leases).
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from w2sray.packing import pack_key
    from w2sray.train.entries import entry_for
    from w2sray.train.pack import pack_loop_per_worker

    runs = [runs] if isinstance(runs, Run) else list(runs)
    run = runs[0]
    if len(runs) == 1 and wait_since is None:
        config: dict[str, Any] = {"run": run.to_config(), "store": store.uri}
        entry = entry_for(config["run"])
    else:
        entry = pack_loop_per_worker
        config = {
            "runs": [r.to_config() for r in runs],
            "describe": {r.key: r.describe() for r in runs},
            "store": store.uri,
            "t_pack": time.time(),
        }
        if wait_since is not None:
            config["wait_since"] = wait_since
            config["wait_grace"] = wait_grace
            config["leases"] = leases or {}
            config["needs"] = {r.key: list(r.needs) for r in runs}
    res = run.resources
    use_gpu = res.gpus_per_worker > 0
    per_worker = {"CPU": res.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = res.gpus_per_worker
    callbacks = []
    if in_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    return TorchTrainer(
        entry,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=res.workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=pack_key(runs),
            storage_path=store.ray_storage_path("train"),
            failure_config=FailureConfig(max_failures=res.max_failures),
            callbacks=callbacks,
        ),
    )
