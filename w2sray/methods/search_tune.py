"""Optuna TPE searches, all in one Ray Tune run: each (dataset, seed, weak -> strong pair,
method) keeps its own seeded ``OptunaSearch`` and concurrency limit, and their trials share the
cluster (Tune runs one search algorithm per Tuner, and concurrent Tuners in one driver are not
supported, so one Searcher multiplexes them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune.search import Searcher

from w2sray.metrics import VAL_GT_ACC, VAL_WEAK_ACC
from w2sray.runs import Search

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
