"""Build the Ray Train TorchTrainer (Train V2) that trains one run."""

from __future__ import annotations

from typing import Any

from w2sray.runs import Run
from w2sray.store import Store


def build_trainer(run: Run, store: Store, in_tune: bool = True) -> Any:
    """A TorchTrainer for ``run``: its workers run train_loop_per_worker with DeepSpeed.

    The Train run's name is the run key, so a retried trial finds its own state again, and its
    metrics reach Tune through TuneReportCallback (rank 0's, already reduced across workers).
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from w2sray.train.loop import train_loop_per_worker
    from w2sray.train.pretrain import pretrain_loop_per_worker

    res = run.resources
    use_gpu = res["gpus_per_worker"] > 0
    per_worker = {"CPU": res["cpus_per_worker"]}
    if use_gpu:
        per_worker["GPU"] = res["gpus_per_worker"]
    callbacks = []
    if in_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    return TorchTrainer(
        pretrain_loop_per_worker if run.kind == "pretrain" else train_loop_per_worker,
        train_loop_config={"run": run.to_config(), "store": store.uri},
        scaling_config=ScalingConfig(
            num_workers=res["workers"], use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=run.key,
            storage_path=store.ray_storage_path("train"),
            failure_config=FailureConfig(max_failures=res["max_failures"]),
            callbacks=callbacks,
        ),
    )
