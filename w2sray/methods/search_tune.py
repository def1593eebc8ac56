"""The search stage: Optuna TPE searches, all in one Ray Tune run after the sweep's other runs:
each (dataset, seed, weak -> strong pair, method) keeps its own seeded ``OptunaSearch`` and
concurrency limit, and their trials share the cluster (Tune runs one search algorithm per Tuner,
and concurrent Tuners in one driver are not supported, so one Searcher multiplexes them). A
trial trains one ``search`` run (w2sray/methods/search_trial.py) through the sweep's trial
function; each search's record (trials, chosen values) is stored as soon as its trials are over.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ray.tune.search import Searcher

from w2sray.methods.search import Search
from w2sray.metrics import VAL_GT_ACC, VAL_WEAK_ACC
from w2sray.runs import Plan, Run
from w2sray.spec import SweepSpec
from w2sray.store import Store

# The value every trial reports for its search to maximise: the search's validation metric.
OBJECTIVE = "objective"
SEARCH_METRIC_KEYS = {"weak_val": VAL_WEAK_ACC, "gt_val": VAL_GT_ACC}


def optuna_search(search: Search) -> Any:
    """The search's own OptunaSearch: TPE, seeded; its first trials are random (startup), then
    it models the finished ones."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    space = {
        k: tune.loguniform(lo, hi) if log else tune.uniform(lo, hi)
        for k, (lo, hi, log) in search.space.items()
    }
    # Seeded per search (from the spec's seed through the search's key): with one seed for all,
    # every pair's random startup trials were the same points.
    seed = int(search.key.split("-")[-1], 16) % (2**31)
    sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=max(1, min(10, search.num_samples // 2))
    )
    return OptunaSearch(
        space=OptunaSearch.convert_search_space(space),
        metric=OBJECTIVE,
        mode="max",
        sampler=sampler,
    )


class MultiSearch(Searcher):
    """Suggests trials for several searches, round robin, each within its own ``num_samples``
    and ``max_concurrent``; ``on_done(search, trials)`` runs once a search's trials are over."""

    def __init__(
        self,
        searches: list[Search],
        on_done: Callable[[Search, list[dict[str, Any]]], None],
    ):
        super().__init__(metric=OBJECTIVE, mode="max")
        self.searches = {s.key: s for s in searches}
        self.subs = {s.key: optuna_search(s) for s in searches}
        self.left = {s.key: s.num_samples for s in searches}
        self.live = {s.key: 0 for s in searches}
        self.trials: dict[str, list[dict[str, Any]]] = {s.key: [] for s in searches}
        self.owner: dict[str, str] = {}
        self.suggested: dict[str, dict[str, Any]] = {}
        self.on_done = on_done
        self._next = 0

    def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
        return True  # every search brings its own space

    # Tune checkpoints a searcher for Tuner.restore; w2sray never restores a search Tuner. A
    # finished search is stored (searches/<key>.json); an interrupted one starts again, and a
    # trial whose setting was already trained (the seeded sampler repeats its first points) is a
    # content-keyed run that the store skips.
    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        keys = list(self.searches)
        if not any(self.left.values()):
            return Searcher.FINISHED
        for i in range(len(keys)):
            key = keys[(self._next + i) % len(keys)]
            if self.left[key] and self.live[key] < self.searches[key].max_concurrent:
                config = self.subs[key].suggest(trial_id)
                if config is None:
                    continue
                self._next = (self._next + i + 1) % len(keys)
                self.left[key] -= 1
                self.live[key] += 1
                self.owner[trial_id] = key
                self.suggested[trial_id] = config
                return {**config, "search_key": key}
        return None  # every search is at its limit: Tune asks again when a trial ends

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        key = self.owner.pop(trial_id, None)
        if key is None:
            return
        self.live[key] -= 1
        ok = not error and result is not None and result.get(OBJECTIVE) is not None
        self.subs[key].on_trial_complete(trial_id, result if ok else None, error=not ok)
        row: dict[str, Any] = {
            "values": self.suggested.pop(trial_id),
            "error": None if ok else "trial failed",
        }
        if ok:
            row.update(run_key=result.get("run_key"), value=result[OBJECTIVE])
        self.trials[key].append(row)
        if not self.left[key] and not self.live[key]:
            self.on_done(self.searches[key], self.trials[key])


def best_of(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best successful trial (the first of equals, in completion order), or None."""
    ok = [t for t in trials if t["error"] is None and t.get("value") is not None]
    return max(ok, key=lambda t: t["value"]) if ok else None


def search_failure(
    search: Search, msg: str, store: Store, trials: list[dict[str, Any]] = ()
) -> dict[str, Any]:
    """A failed search's record for failures/<search key>.json: the report lists it like a
    failed run; the first failed trial's own error (recorded under its run key) says why."""
    error = msg
    for t in trials:
        info = store.read_failure(search.trial_run(t["values"]).key)
        if info is not None:
            error = f"{msg}; its first failed trial's error:\n{info.get('error')}"
            break
    b = search.base
    return {
        **search.describe(),
        "kind": "search",
        "model": b.model.name,
        "variant": search.label,
        "error": error,
        "time": time.time(),
    }


def search_trial(
    config: dict[str, Any], searches: dict[str, Search], store_uri: str
) -> dict[str, Any]:
    """Tune function trainable of the search stage: one trial is one content-keyed ``search``
    run with the sampled values; it reports validation metrics only (it has no test metrics)
    and, as the objective, its search's metric."""
    from w2sray.sweep import _trial

    search = searches[config["search_key"]]
    run = search.trial_run({k: config[k] for k in search.space})
    out = _trial({"runs": [run.key]}, {run.key: run}, store_uri, report_train=False)
    return {**out, OBJECTIVE: out[SEARCH_METRIC_KEYS[search.metric]], "run_key": run.key}


def run_searches(
    searches: list[Search], store: Store, spec: SweepSpec, printer: Callable[[str], None]
) -> dict[str, str]:
    """Run searches without a stored record in one Tuner; write each one's record (trials and
    the chosen values) as soon as its trials are over. Return {search key: error}."""
    import ray
    from ray import tune

    from w2sray.sweep import DRIVER_RESOURCE, _Progress, _run_config, concurrency

    errors: dict[str, str] = {}

    def done(search: Search, trials: list[dict[str, Any]]) -> None:
        best = best_of(trials)
        if best is None:
            errors[search.key] = f"every trial of search {search.key} failed"
            store.record_failure(
                search.key, search_failure(search, errors[search.key], store, trials)
            )
            return
        record = {**search.describe(), "trials": trials, "best": best["values"]}
        store.write_search(search.key, record)
        b = search.base
        printer(
            f"[search] {b.method} {b.weak_model}->{b.model.name} seed {b.seed}: chose "
            f"{best['values']} ({search.metric} {best['value']:.3f})"
        )

    cluster = ray.cluster_resources()
    driver = {"cpu": 0, DRIVER_RESOURCE: 1} if cluster.get(DRIVER_RESOURCE) else {"cpu": 0.01}
    limit = concurrency([s.base for s in searches], cluster, spec.max_concurrent_trials)
    total = sum(s.num_samples for s in searches)
    progress = _Progress("search", total, printer)
    printer(f"[search] {len(searches)} TPE searches, {total} trials, up to {limit} at a time")
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(
                search_trial, searches={s.key: s for s in searches}, store_uri=store.uri
            ),
            driver,
        ),
        tune_config=tune.TuneConfig(
            search_alg=MultiSearch(searches, done),
            num_samples=total,
            max_concurrent_trials=limit,
            reuse_actors=True,
        ),
        run_config=_run_config(spec, "search", store, progress),
    )
    tuner.fit()
    for s in searches:
        if s.key not in errors and store.read_search(s.key) is None:
            errors[s.key] = f"search {s.key} did not finish its trials"
            store.record_failure(s.key, search_failure(s, errors[s.key], store))
    return errors


def search_and_select(
    plan: Plan,
    spec: SweepSpec,
    store: Store,
    out: Any,
    printer: Callable[[str], None],
    connect: Callable[[], None],
) -> list[Run]:
    """The search stage of ``execute`` (w2sray/sweep.py), after the plan's other runs: run the
    searches with no stored record (``connect`` first) and return the runs every stored search
    selected, to be trained next. A search whose base cannot start (its weak labels missing) or
    whose every trial failed is recorded failed in ``out.failed`` (an Outcome) and the store."""
    from w2sray.sweep import _blocked

    records = {s.key: store.read_search(s.key) for s in plan.searches}
    todo = []
    for s in plan.searches:
        if records[s.key] is not None:
            continue  # searched before: its selected run is blocked later if need be
        blocked = _blocked(s.base, store, out)
        if blocked is None:
            todo.append(s)
        else:  # recorded failed; a stored search never is (nothing would clear that)
            out.failed[s.key] = blocked
            store.record_failure(s.key, search_failure(s, out.failed[s.key], store))
    if todo:
        connect()
        out.failed.update(run_searches(todo, store, spec, printer))
        records.update({s.key: store.read_search(s.key) for s in todo})
    else:
        blocked = sum(1 for s in plan.searches if s.key in out.failed)
        printer(
            f"[search] nothing to run ({len(plan.searches) - blocked} searches stored, "
            f"{blocked} blocked)"
        )
    selected = []
    for s in plan.searches:
        if records[s.key] is not None:
            out.searched.append(s.key)
            selected.append(s.final_run(records[s.key]["best"]))
    return selected
