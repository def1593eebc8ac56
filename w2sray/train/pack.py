"""Ray Train entry point of a pack: several runs trained one after another by one worker group
(w2sray/packing.py says which). Each run goes through its own entry point exactly as when it
is trained alone (its own model, DeepSpeed engine, artifacts, report); a run that raises is
recorded as failed, by rank 0, and the pack goes on with the next one."""

from __future__ import annotations

import gc
import time
import traceback
from typing import Any

from w2sray.store import Store


def pack_loop_per_worker(config: dict[str, Any]) -> None:
    """``config`` = {"runs": [Run.to_config(), ...], "describe": {key: Run.describe()},
    "store": uri, "t_pack": when the pack's trial started}. After a restart of the worker
    group (max_failures) the loop starts again: finished runs and runs that raised are
    skipped, the run in progress resumes from its own checkpoint (train/checkpoint.py)."""
    import ray.train
    import torch

    from w2sray.train.entries import entry_for

    store = Store(config["store"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    for run in config["runs"]:
        key = run["key"]
        if store.is_complete(key):  # trained before a restart of this pack
            continue
        failure = store.read_failure(key)
        if failure is not None and float(failure.get("time", 0)) >= config["t_pack"]:
            continue  # raised before a restart of this pack: recorded, not tried again
        try:
            entry_for(run)({"run": run, "store": config["store"]})
        except Exception as exc:
            # A run's own error (its data, its model) is raised on every rank, which all reach
            # this point. A rank whose peer died raises too (from a collective): then the
            # check below fails as well, and the error goes up for Ray Train to restart the
            # worker group (max_failures) instead of failing the run.
            if world > 1:
                import torch.distributed as dist

                try:
                    dist.barrier()
                except Exception:
                    raise exc from None
            if rank == 0:
                error = "".join(traceback.format_exception(exc))
                store.record_failure(
                    key, {**config["describe"][key], "error": error, "time": time.time()}
                )
        finally:
            gc.collect()  # the run's model and engine, before the next run allocates its own
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
