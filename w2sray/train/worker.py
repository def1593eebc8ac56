"""What every Ray Train entry point (fine-tuning, pretraining, features, probes) does the same
way: learn where it runs, load its run's model, report its metrics to Tune."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from w2sray.artifacts import MODEL_DIR
from w2sray.store import Store


@dataclass
class Worker:
    """Where this worker runs: its rank among ``world`` workers and its device."""

    rank: int
    world: int
    device: torch.device
    use_gpu: bool
    gpu_memory_fraction: float | None  # on a shared GPU: the allocator's cap


def start_worker(run: dict[str, Any]) -> Worker:
    """This worker's rank and device; caps its share of a shared GPU before anything is
    allocated on it (gpus_per_worker < 1); seeds torch with the run's seed."""
    import ray.train
    import ray.train.torch

    from w2sray.train.gpu_share import limit_gpu_memory

    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    fraction = limit_gpu_memory(typed_resources(run), device)
    torch.manual_seed(run["seed"])
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    return Worker(rank, world, device, device.type == "cuda", fraction)


def typed_train(run: dict[str, Any]) -> Any:
    """The run's training settings as the spec's dataclass (spec.TrainSettings): attributes,
    not string keys; a setting the run's config predates takes its default."""
    from w2sray.spec import TrainSettings

    return TrainSettings(**run["train"])


def typed_resources(run: dict[str, Any]) -> Any:
    """The run's layout as the spec's dataclass (spec.Resources)."""
    from w2sray.spec import Resources

    return Resources(**run["resources"])


def load_run_model(
    run: dict[str, Any],
    store: Store,
    use_gpu: bool,
    bf16: bool,
    corpus: list[str],
    lm_head: bool | str = False,
) -> Any:
    """The run's model (models.load_model): the weights its pretraining run stored, else its
    source at the commit the plan resolved. ``corpus``: a built-in model's vocabulary."""
    from w2sray.models import load_model
    from w2sray.settings import ModelRef

    m = ModelRef.from_dict(run["model"])
    return load_model(
        store.local_folder(m.pretrain, MODEL_DIR) if m.pretrain else m.source,
        seed=run["seed"],
        revision=None if m.pretrain else m.load_revision,
        pooling=m.pooling or "auto",  # a pretraining run's model has none: unused there
        trust_remote_code=m.trust_remote_code,
        # bf16 weights straight from the checkpoint on GPU (DeepSpeed's bf16 cast would make
        # the same values); on CPU float32, and DeepSpeed casts when bf16 is asked for there.
        dtype=torch.bfloat16 if bf16 and use_gpu else torch.float32,
        corpus=corpus,
        lm_head=lm_head,
    )


def report(run: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Report a finished run's numeric metrics to Ray Train (and so to its Tune trial), with
    its key: a pack's runs report one after another to the same trial (``run_done`` tells
    these reports from a checkpoint's, for the sweep's progress line)."""
    import ray.train

    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    ray.train.report({**numbers, "run_key": run["key"], "run_done": 1})
