"""Execute a plan: one Ray Tune Tuner per stage, each trial a TorchTrainer run; finished runs skip.

A failing run is recorded in the store (failures/<key>.json) and does not stop the others; the
transfer runs of a weak model whose GT run failed are recorded as failed without launching.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from w2sray.runs import Plan, Run, manifest
from w2sray.spec import SweepSpec
from w2sray.store import Store

# A custom resource that trial drivers hold instead of CPUs: with Tune's default of 1 CPU per
# trial plus 1 per Train worker, concurrent trials on a small node deadlock waiting for CPUs.
DRIVER_RESOURCE = "w2s_driver"


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)  # trained in this invocation
    skipped: list[str] = field(default_factory=list)  # already complete in the store
    failed: dict[str, str] = field(default_factory=dict)  # key -> first line of the error
    wall_seconds: float = 0.0


# Ray Train settings for a cluster that w2sray starts itself (a laptop or a CI box): no spot
# preemption to watch for (one process less per run) and a faster controller poll (runs are
# short, so the default 2 s poll shows up in every run's wall time).
LOCAL_TRAIN_ENV = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    # On a busy 2-core box worker start-up (imports, process group) can exceed Train's 60 s.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
    # Per-process logging set-up that a short local run pays for and nobody reads.
    "RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING": "0",
    "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
}


def local_init_kwargs(num_cpus: int | None = None) -> dict[str, Any]:
    """ray.init arguments for a local cluster: CPUs, the driver resource, quiet logging."""
    return dict(
        num_cpus=num_cpus or os.cpu_count(),
        resources={DRIVER_RESOURCE: 10_000},
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": dict(LOCAL_TRAIN_ENV)},
    )


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to a Ray cluster (``address``, or RAY_ADDRESS as Ray jobs set it) or start one."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(**local_init_kwargs(num_cpus))


def concurrency(runs: list[Run], cluster: dict[str, float], cap: int | None) -> int:
    """How many runs may be in flight at once.

    The spec's ``max_concurrent_trials`` wins when set: on an autoscaling cluster the GPU nodes
    do not exist yet when a stage starts, so only the user knows what it will grow to. Otherwise
    it is the cluster's CPUs/GPUs over the largest run's needs, so a queued trial never holds
    resources another trial's workers wait for.
    """
    if cap:
        return cap
    need_cpu = max(r.resources["workers"] * r.resources["cpus_per_worker"] for r in runs)
    need_gpu = max(r.resources["workers"] * r.resources["gpus_per_worker"] for r in runs)
    n = len(runs)
    if need_cpu > 0:
        n = min(n, math.floor(cluster.get("CPU", 0) / need_cpu + 1e-9))
    if need_gpu > 0:
        n = min(n, math.floor(cluster.get("GPU", 0) / need_gpu + 1e-9))
    return max(1, n)


def _trial(config: dict[str, Any], runs: dict[str, Run], store_uri: str) -> dict[str, Any]:
    """Tune function trainable: train one run through a TorchTrainer, unless already stored."""
    from w2sray.train.trainer import build_trainer

    key = config["run_key"]
    store = Store(store_uri)
    if not store.is_complete(key):  # another sweep sharing the store may have finished it
        run = runs[key]
        t_fit = time.time()
        try:
            build_trainer(run, store).fit()
            if not store.is_complete(key):
                raise RuntimeError(f"run {key} finished without complete artifacts")
        except Exception as exc:
            store.record_failure(key, _failure(run, exc))
            raise
        timing = {"t_fit_start": t_fit, "t_fit_end": time.time()}
    else:
        timing = {"skipped": 1}
    metrics = store.read_json(key, "metrics.json")
    return {**{k: v for k, v in metrics.items() if isinstance(v, (int, float))}, **timing}


def _failure(run: Run, exc: BaseException | str) -> dict[str, Any]:
    text = exc if isinstance(exc, str) else "".join(traceback.format_exception(exc))
    return {**run.describe(), "error": text, "time": time.time()}


def _first_line(text: str) -> str:
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    # the last line of a traceback names the exception; prefer it
    return lines[-1] if lines else "unknown error"


class _Progress:
    """Prints runs done / running / failed / left for a stage as trials move."""

    def __init__(self, stage: str, total: int, printer: Callable[[str], None]):
        self.stage, self.total, self.printer = stage, total, printer
        self.running = self.done = self.failed = 0
        self.t0 = time.time()

    def show(self) -> None:
        left = self.total - self.done - self.failed - self.running
        self.printer(
            f"[{self.stage}] done {self.done}/{self.total}  running {self.running}  "
            f"failed {self.failed}  left {left}  ({time.time() - self.t0:.0f}s)"
        )


def _progress_callback(progress: _Progress) -> Any:
    from ray import tune

    class Callback(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            progress.running += 1
            progress.show()

        def on_trial_complete(self, iteration, trials, trial, **info):
            progress.running -= 1
            progress.done += 1
            progress.show()

        def on_trial_error(self, iteration, trials, trial, **info):
            progress.running -= 1
            progress.failed += 1
            progress.show()

    return Callback()


def run_stage(
    name: str,
    runs: list[Run],
    store: Store,
    spec: SweepSpec,
    printer: Callable[[str], None],
) -> dict[str, str]:
    """Fit one Tuner over ``runs``; return {key: error line} for the runs that failed."""
    import ray
    from ray import tune

    cluster = ray.cluster_resources()
    if cluster.get(DRIVER_RESOURCE):
        driver = {"cpu": 0, DRIVER_RESOURCE: 1}
    else:  # a cluster not started by w2sray: a sliver of CPU per driver, counted below
        driver = {"cpu": 0.01}
        cluster = {**cluster, "CPU": cluster.get("CPU", 0) - 0.01 * len(runs)}
    limit = concurrency(runs, cluster, spec.max_concurrent_trials)
    progress = _Progress(name, len(runs), printer)
    printer(f"[{name}] {len(runs)} runs, up to {limit} at a time")
    trainable = tune.with_resources(
        tune.with_parameters(_trial, runs={r.key: r for r in runs}, store_uri=store.uri), driver
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"run_key": tune.grid_search([r.key for r in runs])},
        tune_config=tune.TuneConfig(max_concurrent_trials=limit, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{spec.name}-{name}",
            storage_path=store.ray_storage_path(),
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            callbacks=[_progress_callback(progress)],
            verbose=0,
        ),
    )
    grid = tuner.fit()
    failed: dict[str, str] = {}
    by_key = {r.key: r for r in runs}
    for result in grid:
        key = (result.config or {}).get("run_key")
        if result.error is not None and key:
            failed[key] = _first_line(str(result.error))
            if not store.has_failure(key):
                store.record_failure(key, _failure(by_key[key], str(result.error)))
    return failed


def execute(
    spec: SweepSpec,
    plan: Plan,
    store: Store,
    address: str | None = None,
    printer: Callable[[str], None] = print,
) -> Outcome:
    """Run every incomplete run of ``plan``, stage by stage, and return what happened."""
    t0 = time.time()
    out = Outcome()
    store.write_manifest(spec.name, manifest(spec, plan))
    for name, runs in plan.stages:
        todo = []
        for run in runs:
            if store.is_complete(run.key):
                out.skipped.append(run.key)
            elif any(up in out.failed for up in run.upstream) or (
                run.upstream and not all(store.is_complete(u) for u in run.upstream)
            ):
                msg = f"upstream run {run.upstream[0]} has no result"
                out.failed[run.key] = msg
                store.record_failure(run.key, _failure(run, msg))
            else:
                todo.append(run)
        if not todo:
            printer(f"[{name}] nothing to run ({len(runs)} runs already complete or blocked)")
            continue
        connect(address)
        failed = run_stage(name, todo, store, spec, printer)
        out.failed.update(failed)
        out.done.extend(r.key for r in todo if r.key not in failed)
    out.wall_seconds = time.time() - t0
    return out
