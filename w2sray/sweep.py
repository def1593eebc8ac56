"""Execute a plan: one Ray Tune Tuner per stage, each trial a TorchTrainer run; finished runs skip.

A failing run is recorded in the store (failures/<key>.json) and does not stop the others; the
transfer runs of a weak model whose GT run failed are recorded as failed without launching.
Searches run after the other runs (their stage: w2sray/methods/search_tune.py), then the runs
they select.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from w2sray.artifacts import METRICS
from w2sray.claims import Lease, claim_or_wait, remove_expired, renewed
from w2sray.packing import make_packs
from w2sray.runs import Plan, Run, manifest
from w2sray.spec import SweepSpec
from w2sray.store import Store, error_line

# A custom resource that trial drivers hold instead of CPUs: with Tune's default of 1 CPU per
# trial plus 1 per Train worker, concurrent trials on a small node deadlock waiting for CPUs.
DRIVER_RESOURCE = "w2s_driver"
# In a trial's result: the run was complete without this trial training it (another sweep
# sharing the store trained it, perhaps while this trial waited on its claim).
ELSEWHERE = "trained_elsewhere"


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)  # trained in this invocation
    skipped: list[str] = field(default_factory=list)  # already complete in the store
    # completed meanwhile by another sweep sharing the store (this one waited on its claim)
    elsewhere: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> first line of the error
    searched: list[str] = field(default_factory=list)  # searches run or reused
    wall_seconds: float = 0.0


# Ray Train settings for every cluster w2sray runs on: no preemption watcher (one actor less per
# run; a preempted node's run still restarts from its checkpoint through FailureConfig) and a
# faster controller poll (short runs otherwise wait out the default 2 s poll).
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
        # "local": always a new cluster; a bare ray.init() would join any cluster that
        # `ray start` left on this machine (/tmp/ray/ray_current_cluster).
        address="local",
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
        # The same Train settings on a cluster w2sray joins (`ray start`, launcher, KubeRay,
        # `ray job submit`): with Train's defaults, a run's worker group never started there
        # from inside a trial whose driver holds no CPU (tests/test_cluster_job.py). Ray merges
        # these with a submitted job's own runtime_env.
        ray.init(
            address=address,
            log_to_driver=False,
            runtime_env={"env_vars": dict(LOCAL_TRAIN_ENV)},
        )
    else:
        # On a saturated machine a new local node can miss Ray's start-up deadline (its agents
        # report late); nothing has run yet, so starting again is safe.
        for attempt in range(3):
            try:
                ray.init(**local_init_kwargs(num_cpus))
                return
            except Exception as exc:
                if "timed out during startup" not in str(exc) or attempt == 2:
                    raise
                ray.shutdown()
                time.sleep(5)


def concurrency(runs: list[Run], cluster: dict[str, float], cap: int | None) -> int:
    """How many runs may be in flight at once.

    The spec's ``max_concurrent_trials`` wins when set: on an autoscaling cluster the GPU nodes
    do not exist yet when a stage starts, so only the user knows what it will grow to. Otherwise
    it is the cluster's CPUs/GPUs over the largest run's needs, so a queued trial never holds
    resources another trial's workers wait for.
    """
    if cap:
        return cap
    need_cpu = max(r.resources.workers * r.resources.cpus_per_worker for r in runs)
    need_gpu = max(r.resources.workers * r.resources.gpus_per_worker for r in runs)
    n = len(runs)
    if need_cpu > 0:
        n = min(n, math.floor(cluster.get("CPU", 0) / need_cpu + 1e-9))
    if need_gpu > 0:
        gpus = cluster.get("GPU", 0)
        if need_gpu < 1:  # one-worker runs on a share: Ray packs floor(1/share) per device
            fit = math.floor(gpus + 1e-9) * math.floor(1 / need_gpu + 1e-9)
        else:
            fit = math.floor(gpus / need_gpu + 1e-9)
        n = min(n, fit)
    return max(1, n)


def _trial(
    config: dict[str, Any],
    runs: dict[str, Run],
    store_uri: str,
    report_train: bool = True,
    leases: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Tune function trainable: train the trial's runs, ``config["runs"]`` (one run, or a pack
    of short ones: w2sray/packing.py; a dataflow pack, with ``leases``: w2sray/dataflow.py),
    through one TorchTrainer, unless already stored.
    ``report_train`` forwards the Train run's own reports to Tune as they come (a search trial
    reports once, at the end, with the objective its searcher needs in every result)."""
    keys = list(config["runs"])
    store = Store(store_uri)
    wait = config.get("wait_since"), config.get("wait_grace")  # a dataflow pack: dataflow.py
    if len(keys) == 1 and wait[0] is None:
        return _train_one(keys[0], runs, store, report_train)
    return _train_pack(keys, runs, store, report_train, *wait, leases)


def _train_one(key: str, runs: dict[str, Run], store: Store, report_train: bool) -> dict[str, Any]:
    """One run: claimed, trained, its metrics returned; raises when it fails."""
    from w2sray.train.trainer import build_trainer

    # Claim the run before training it: a live claim of another sweep sharing the store means
    # it is being trained there, and this trial waits for its result instead.
    lease = claim_or_wait(store, key)
    if lease is None:  # complete: trained by another sweep (before or while this one waited)
        timing = {ELSEWHERE: 1}
    else:
        run = runs[key]
        t_fit = time.time()
        with renewed([lease]):
            try:
                if store.is_complete(key):  # completed between the check and the claim
                    timing = {ELSEWHERE: 1}
                else:
                    build_trainer(run, store, in_tune=report_train).fit()
                    if not store.is_complete(key):
                        raise RuntimeError(f"run {key} finished without complete artifacts")
                    timing = {"t_fit_start": t_fit, "t_fit_end": time.time()}
            except Exception as exc:
                store.record_failure(key, _failure(run, exc))
                raise
    metrics = store.read_json(key, METRICS)
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    return {**numbers, **timing, "run_key": key}


def _train_pack(
    keys: list[str],
    runs: dict[str, Run],
    store: Store,
    report_train: bool,
    wait_since: float | None = None,
    wait_grace: float | None = None,
    leases: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pack: the runs this trial can claim trained by one worker group, one after another;
    a run another sweep holds is waited on afterwards (in a dataflow pack, ``wait_since`` set:
    left to the staged pass, when its inputs are sure to be done). Failed runs are recorded,
    not raised: the others of the pack are results (run_stage reads each run's outcome from
    the store)."""
    from w2sray.train.trainer import build_trainer

    held, waiting, elsewhere = [], [], []
    for key in keys:
        lease = Lease(store, key)
        if store.is_complete(key):
            elsewhere.append(key)
        elif lease.acquire():
            held.append(lease)
        else:
            waiting.append(key)
    t_fit = time.time()
    with renewed(held):
        todo = [lease.key for lease in held if not store.is_complete(lease.key)]
        elsewhere += [lease.key for lease in held if lease.key not in todo]
        if todo:
            try:
                trainer = build_trainer(
                    [runs[k] for k in todo], store, report_train, wait_since, wait_grace, leases
                )
                trainer.fit()
            except Exception as exc:  # the worker group itself failed: every unfinished run
                for k in todo:
                    if not store.is_complete(k) and not _fresh_failure(store, k, t_fit):
                        store.record_failure(k, _failure(runs[k], exc))
    t_end = time.time()
    for key in waiting if wait_since is None else ():  # claimed by another sweep at the start
        try:
            if _train_one(key, runs, store, report_train).get(ELSEWHERE):
                elsewhere.append(key)
        except Exception:  # recorded by _train_one
            pass
    # failed: recorded so in this trial (a dataflow run deferred is neither failed nor done)
    failed = [k for k in keys if not store.is_complete(k) and _fresh_failure(store, k, t_fit)]
    return {
        "runs": len(keys),
        "failed": len(failed),
        ELSEWHERE: len(elsewhere),
        "elsewhere_keys": elsewhere,
        "t_fit_start": t_fit,
        "t_fit_end": t_end,
    }


def _fresh_failure(store: Store, key: str, since: float) -> bool:
    info = store.read_failure(key)
    return info is not None and float(info.get("time", 0)) >= since


def _failure(run: Run, exc: BaseException | str) -> dict[str, Any]:
    text = exc if isinstance(exc, str) else "".join(traceback.format_exception(exc))
    return {**run.describe(), "error": text, "time": time.time()}


class _Progress:
    """Prints runs done / running / failed / left for a stage as trials move."""

    def __init__(self, stage: str, total: int, printer: Callable[[str], None]):
        self.stage, self.total, self.printer = stage, total, printer
        self.running = self.done = self.failed = 0
        self.t0 = time.time()

    def show(self) -> None:
        # a dataflow pack counts as one run in flight until its last run reports
        running = min(self.running, self.total - self.done - self.failed)
        left = self.total - self.done - self.failed - running
        self.printer(
            f"[{self.stage}] done {self.done}/{self.total}  running {running}  "
            f"failed {self.failed}  left {left}  ({time.time() - self.t0:.0f}s)"
        )


def _progress_callback(progress: _Progress) -> Any:
    from ray import tune

    class Callback(tune.Callback):
        # A trial trains one run or a pack (config "runs"; a search trial: one run); a pack's
        # runs count as done one by one, as their final reports (run_done) arrive. Running:
        # a pack's runs, but a dataflow pack (wait_since) as one: it trains one at a time.
        def __init__(self) -> None:
            super().__init__()
            self.reported: dict[str, int] = {}

        @staticmethod
        def _running(trial) -> int:
            return 1 if "wait_since" in trial.config else len(trial.config.get("runs", [None]))

        def on_trial_start(self, iteration, trials, trial, **info):
            progress.running += self._running(trial)
            progress.show()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("run_done"):
                self.reported[trial.trial_id] = self.reported.get(trial.trial_id, 0) + 1
                progress.running -= 0 if "wait_since" in trial.config else 1
                progress.done += 1
                progress.show()

        def _left(self, trial) -> int:
            n = len(trial.config.get("runs", [None]))
            left = n - self.reported.pop(trial.trial_id, 0)
            progress.running -= 1 if "wait_since" in trial.config else left
            return left

        def on_trial_complete(self, iteration, trials, trial, **info):
            left = self._left(trial)
            failed = min(left, int((trial.last_result or {}).get("failed", 0)))
            progress.done += left - failed
            progress.failed += failed
            progress.show()

        def on_trial_error(self, iteration, trials, trial, **info):
            progress.failed += self._left(trial)
            progress.show()

    return Callback()


def _run_config(spec: SweepSpec, stage: str, store: Store, progress: _Progress) -> Any:
    """Tune's RunConfig of a stage: its state in the store, a failing trial failing alone, and
    the spec's experiment trackers (w2sray/tracking.py)."""
    from ray import tune

    from w2sray.tracking import tracking_callbacks

    return tune.RunConfig(
        name=f"{spec.name}-{stage}",
        storage_path=store.ray_storage_path(),
        failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        callbacks=[
            _progress_callback(progress),
            *tracking_callbacks(spec.tracking, spec.name, stage),
        ],
        verbose=0,
    )


def run_stage(
    name: str,
    runs: list[Run],
    store: Store,
    spec: SweepSpec,
    printer: Callable[[str], None],
    elsewhere: list[str] | None = None,
    dataflow: bool = False,
    deferred: list[str] | None = None,
) -> dict[str, str]:
    """Fit one Tuner over ``runs``; return {key: error line} for the runs that failed. The keys
    of runs another sweep sharing the store completed meanwhile are added to ``elsewhere``.
    ``dataflow``: ``runs`` span stages (inputs first), one pack per slot whose runs wait for
    their inputs in the store (w2sray/dataflow.py); a run it defers is neither failed nor
    complete afterwards, and its key is added to ``deferred``."""
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
    extra: dict[str, Any] = {}
    leases = None
    if dataflow:
        from w2sray import dataflow as flow

        packs = flow.schedule(runs, limit)
        extra.update(wait_since=time.time(), wait_grace=flow.GRACE_S)
        leases = flow.pack_leases(packs, extra["wait_since"])
        printer(f"[{name}] {len(runs)} runs across stages in {len(packs)} packs, one per slot")
    else:
        packs = make_packs(runs, limit, **_pack_options(spec))
        packed = sum(len(p) for p in packs if len(p) > 1)
        how = f" ({packed} of them in {sum(len(p) > 1 for p in packs)} packs)" if packed else ""
        printer(f"[{name}] {len(runs)} runs{how}, up to {limit} trials at a time")
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial,
            runs={r.key: r for r in runs},
            store_uri=store.uri,
            **({"leases": leases} if leases else {}),  # a dataflow pack's (w2sray/dataflow.py)
        ),
        driver,
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"runs": tune.grid_search([[r.key for r in p] for p in packs]), **extra},
        tune_config=tune.TuneConfig(max_concurrent_trials=limit, reuse_actors=True),
        run_config=_run_config(spec, name, store, progress),
    )
    t_stage = time.time()
    grid = tuner.fit()
    failed: dict[str, str] = {}
    by_key = {r.key: r for r in runs}
    covered: set[str] = set()
    for result in grid:
        keys = (result.config or {}).get("runs") or []
        covered.update(keys)
        metrics = result.metrics or {}
        if elsewhere is not None and result.error is None:
            if len(keys) == 1 and metrics.get(ELSEWHERE):
                elsewhere.append(keys[0])
            elif len(keys) > 1:
                elsewhere.extend(metrics.get("elsewhere_keys") or [])
        for key in keys:  # each run's outcome: its result in the store, or its failure
            if store.is_complete(key):
                continue
            info = store.read_failure(key)
            fresh = info is not None and float(info.get("time", 0)) >= t_stage
            if result.error is not None and not fresh:
                info = _failure(by_key[key], str(result.error))
                store.record_failure(key, info)
            elif not fresh:  # trained or recorded by a trial that ended well, unless deferred
                if deferred is not None:
                    deferred.append(key)
                continue
            failed[key] = error_line(info.get("error"))
    if deferred is not None:  # and runs no trial of the grid held: not trained either
        deferred.extend(k for k in by_key if k not in covered)
    return failed


def _pack_options(spec: SweepSpec) -> dict[str, Any]:
    return {k: spec.packing[k] for k in ("max_runs", "max_cost")}


def dataflow_ok(spec: SweepSpec, runs: list[Run]) -> bool:
    """Whether ``runs`` go through one dataflow experiment: the spec's ``packing.dataflow``
    (and packing at all: ``max_runs`` > 1), more than one stage's worth of work, and one
    worker-group shape for every run (a pack has one worker group)."""
    shapes = {r.resources for r in runs}
    stages = {(r.kind, r.depth) for r in runs}
    return (
        bool(spec.packing.get("dataflow", True))
        and spec.packing["max_runs"] > 1
        and len(shapes) == 1
        and len(stages) > 1
    )


def _blocked(run: Run, store: Store, out: Outcome, pending: set[str] = frozenset()) -> str | None:
    """Why ``run`` cannot start: the first run it needs (its upstream, its model's pretraining,
    a probe's features run) that failed or has no result and is not ``pending`` (to be trained
    with it, in a dataflow experiment); None when it can."""
    from w2sray.dataflow import need_role

    for need in run.needs:
        if need in out.done or need in out.skipped or need in out.elsewhere:  # checked complete
            continue
        if need in pending and need not in out.failed:
            continue
        if need in out.failed or not store.is_complete(need):
            role = need_role({"model": run.model.as_dict(), "features": run.features}, need)
            return f"{role} run {need} has no result"
    return None


def _runnable(runs: tuple[Run, ...] | list[Run], store: Store, out: Outcome) -> list[Run]:
    """The runs still to train, inputs first; complete ones are skipped, blocked ones recorded
    as failed. A run may need one listed before it (dataflow: trained together)."""
    todo: list[Run] = []
    pending: set[str] = set()
    for run in runs:
        if store.is_complete(run.key):
            out.skipped.append(run.key)
        elif msg := _blocked(run, store, out, pending):
            out.failed[run.key] = msg
            store.record_failure(run.key, _failure(run, msg))
        else:
            todo.append(run)
            pending.add(run.key)
    return todo


def _echo(line: str) -> None:
    print(line, flush=True)


def execute(
    spec: SweepSpec,
    plan: Plan,
    store: Store,
    address: str | None = None,
    printer: Callable[[str], None] | None = None,
) -> Outcome:
    """Run every incomplete run of ``plan``, stage by stage, then its searches and the runs
    they select, and return what happened."""
    t0 = time.time()
    # print as it is now, not as it was when this module was imported: the stage's progress
    # callback is pickled with the Tuner's state, by reference, and some libraries replace
    # builtins.print after import (the default would then no longer pickle)
    printer = printer or _echo
    out = Outcome()
    stored = [store.read_search(s.key) for s in plan.searches]
    selected = [s.final_run(r["best"]) for s, r in zip(plan.searches, stored, strict=True) if r]
    store.write_manifest(spec.name, manifest(spec, plan, selected))

    def seen(key: str) -> bool:
        return key in out.failed or key in out.done or key in out.skipped or key in out.elsewhere

    def stage(
        name: str, runs: tuple[Run, ...] | list[Run], dataflow: bool = False, quiet: bool = False
    ) -> None:
        todo = _runnable([r for r in runs if not seen(r.key)], store, out)
        if not todo:
            if not quiet:
                printer(f"[{name}] nothing to run ({len(runs)} runs already complete or blocked)")
            return
        connect(address)
        deferred: list[str] = []  # by a dataflow experiment: to the staged pass below
        failed = run_stage(name, todo, store, spec, printer, out.elsewhere, dataflow, deferred)
        out.failed.update(failed)
        left = {*failed, *out.elsewhere, *deferred}
        out.done.extend(r.key for r in todo if r.key not in left)

    # The whole plan as one experiment when it can be (w2sray/dataflow.py), then stage by
    # stage: everything, or (after the dataflow experiment) what it deferred.
    flowed = dataflow_ok(spec, plan.all_runs())
    if flowed:
        stage("runs", plan.all_runs(), dataflow=True)
    for name, runs in plan.stages:
        stage(name, runs, quiet=flowed)
    if plan.searches:  # after every other run: a search needs its weak labels
        from w2sray.methods.search_tune import search_and_select

        selected = search_and_select(plan, spec, store, out, printer, lambda: connect(address))
        store.write_manifest(spec.name, manifest(spec, plan, selected))
        stage("selected", list({r.key: r for r in selected}.values()))
    remove_expired(store)  # claims a killed driver left behind
    out.wall_seconds = time.time() - t0
    return out


def result_grid(store: Store, experiment: str) -> Any:
    """A finished stage or search as a Ray Tune ``ResultGrid`` (``Tuner.restore``), for users
    who analyse with Tune's tools. ``experiment`` is ``<sweep>-gt``, ``<sweep>-transfer``,
    ``<sweep>-chain-2``, ``<sweep>-search`` or ``<sweep>-selected``. A trial's config is
    ``{"runs": [run keys]}`` (several for a pack); each run's metrics are a row of its
    trial's ``metrics_dataframe`` with its ``run_key``."""
    from ray import tune

    from w2sray.methods.search_tune import search_trial

    path = store.ray_storage_path(experiment)
    trainable = search_trial if experiment.endswith("-search") else _trial
    return tune.Tuner.restore(path, trainable=trainable).get_results()
