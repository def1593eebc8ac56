"""Mid-run checkpoints through Ray Train, so a run whose worker dies resumes where it was.

Every rank calls DeepSpeed's save_checkpoint into its own local folder (DeepSpeed names each
rank's shard files apart: ZeRO-3 saves every rank's weights and optimizer shard) and reports it
with ray.train.report; Ray Train puts the folders of all ranks into one checkpoint in the run's
storage. On a restart (FailureConfig.max_failures), ray.train.get_checkpoint() hands it back and
every rank loads its shard. The data order is a pure function of the seed, so the step number
is all the loop needs besides the engine state, and each rank's own progress (its losses and
tokens: the workers see different micro batches) sits beside its shard. A LoRA run saves only
its trainable state (adapters, head, their optimizer state; ``exclude_frozen_parameters``).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

TAG = "w2sray"


def progress_file(rank: int) -> str:
    """A rank's progress (step, its per-step losses and tokens) in the checkpoint folder."""
    return f"progress-rank{rank}.json"


def checkpoint_interval(total_steps: int, every: int, max_failures: int) -> int:
    """Steps between checkpoints: ``every`` if set, else a quarter of the run when the run may
    be restarted, else 0 (no checkpoints: they cost a save per interval)."""
    if every > 0:
        return every
    return max(1, total_steps // 4) if max_failures != 0 else 0


def save(
    engine: Any,
    step: int,
    losses: list[float],
    tokens: int,
    rank: int,
    key: str = "",
    exclude_frozen: bool = False,
) -> None:
    """Save this rank's engine state and progress after ``step`` steps of run ``key`` and
    report it to Ray Train (every rank reports; Ray Train merges their folders into one
    checkpoint). ``exclude_frozen`` (LoRA): only the trainable parameters and their optimizer
    state; the frozen base weights are rebuilt from the model's source on a restart."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        engine.save_checkpoint(tmp, tag=TAG, exclude_frozen_parameters=exclude_frozen)
        with open(os.path.join(tmp, progress_file(rank)), "w") as fh:
            json.dump({"step": step, "losses": losses, "tokens": tokens, "key": key}, fh)
        ray.train.report(
            {"step": step, "run_key": key}, checkpoint=ray.train.Checkpoint.from_directory(tmp)
        )


def restore(
    engine: Any, rank: int, key: str = "", frozen_excluded: bool = False
) -> tuple[int, list[float], int]:
    """Load the last reported checkpoint into ``engine`` if it is run ``key``'s: (step, this
    rank's losses, this rank's tokens); (0, [], 0) when there is none. In a pack of runs
    (w2sray/train/pack.py) the last checkpoint may be an earlier run's: it is not loaded."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return 0, [], 0
    with ckpt.as_directory() as path:
        with open(os.path.join(path, progress_file(rank))) as fh:
            progress = json.load(fh)
        if progress.get("key", "") != key:
            return 0, [], 0
        # A checkpoint without the frozen weights (LoRA) holds part of the module's state.
        engine.load_checkpoint(path, tag=TAG, load_module_strict=not frozen_excluded)
    return int(progress["step"]), list(progress["losses"]), int(progress["tokens"])
