"""Ray Train entry point of a pack: several runs trained one after another by one worker group
(w2sray/packing.py says which). Each run goes through its own entry point exactly as when it
is trained alone (its own model, DeepSpeed engine, artifacts, report); a run that raises is
recorded as failed, by rank 0, and the pack goes on with the next one."""

from __future__ import annotations

import contextlib
import gc
import time
import traceback
from collections.abc import Iterator
from typing import Any

from w2sray.claims import TTL_S, Lease, renewed
from w2sray.store import Store


def pack_loop_per_worker(config: dict[str, Any]) -> None:
    """``config`` = {"runs": [Run.to_config(), ...], "describe": {key: Run.describe()},
    "store": uri, "t_pack": when the pack's trial started, and for a dataflow pack "wait_since":
    when the sweep started, "wait_grace": seconds an input whose pack shows no life is waited
    for, "needs": {key: input keys}, "leases": {key: its pack's lease}}. After a restart of
    the worker
    group (max_failures) the loop starts again: finished runs and runs that raised are
    skipped, the run in progress resumes from its own checkpoint (train/checkpoint.py)."""
    import ray.train

    store = Store(config["store"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    waiter = None
    if config.get("wait_since") is not None:
        from w2sray.dataflow import GRACE_S, NeedsWaiter

        grace = config.get("wait_grace")
        grace = GRACE_S if grace is None else grace
        waiter = NeedsWaiter(store, config["wait_since"], grace, config.get("leases"))
    # rank 0 of a dataflow pack holds its pack's lease while the pack's runs train: packs
    # waiting on them know it is alive (a trial whose workers never started holds none)
    leases = config.get("leases") or {}
    own = leases.get(config["runs"][0]["key"]) if waiter is not None and rank == 0 else None
    with holding(store, own):
        _loop(config, store, waiter, rank, world)


@contextlib.contextmanager
def holding(store: Store, key: str | None, ttl: float = TTL_S) -> Iterator[None]:
    """Hold pack lease ``key`` (None: nothing) while the block runs: taken whatever claim is
    there (the name is this pack's alone: a claim found is a killed earlier attempt's),
    renewed every ttl/4, released after."""
    if key is None:
        yield
        return
    lease = Lease(store, key, ttl=ttl)
    lease.take()
    with renewed([lease]):
        yield


def _loop(config: dict[str, Any], store: Store, waiter: Any, rank: int, world: int) -> None:
    import torch

    from w2sray.train.entries import entry_for

    for run in config["runs"]:
        key = run["key"]
        if store.is_complete(key):  # trained before a restart of this pack
            continue
        failure = store.read_failure(key)
        if failure is not None and float(failure.get("time", 0)) >= config["t_pack"]:
            continue  # raised before a restart of this pack: recorded, not tried again
        if waiter is not None and not _inputs_ready(run, waiter, config, rank, world):
            continue
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


def _inputs_ready(
    run: dict[str, Any], waiter: Any, config: dict[str, Any], rank: int, world: int
) -> bool:
    """Wait until the run's inputs are in the store (True), or give it up (False): recorded as
    failed when an input failed, left for the staged pass when deferred. Rank 0 polls the
    store and every rank takes its answer at each poll: no collective blocks for longer than
    a poll, however long an upstream run trains."""
    from w2sray.dataflow import DEFERRED, FAILED, POLL_S, READY, WAITING, need_role

    needs = config["needs"][run["key"]]
    while True:
        state, need = waiter.poll(needs) if rank == 0 else (WAITING, None)
        state = _from_rank0(state, world)
        if state == READY:
            return True
        if state == FAILED and rank == 0:
            error = f"{need_role(run, need)} run {need} has no result"
            info = {**config["describe"][run["key"]], "error": error, "time": time.time()}
            waiter.store.record_failure(run["key"], info)
        if state == DEFERRED and rank == 0:
            waiter.deferred.add(run["key"])
        if state != WAITING:
            return False
        time.sleep(POLL_S)


def _from_rank0(value: int, world: int) -> int:
    """Rank 0's ``value`` on every rank (a broadcast over the worker group's process group)."""
    if world == 1:
        return value
    import ray.train.torch
    import torch
    import torch.distributed as dist

    device = ray.train.torch.get_device() if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())
