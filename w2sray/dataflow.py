"""Dataflow execution: the whole sweep as one Tune experiment with one trial per slot.

Stage by stage (pretrain, gt, transfer, ...), every stage pays Ray's start-up again (a Tune
trial, a Train controller, worker processes importing torch, transformers and DeepSpeed, a
process group: about 16 s on 2 cores, benchmarks/RESULTS.md 10b), and a slot that finishes its
stage early idles until the stage's longest run ends. Here the planner's runs, across stages,
are assigned to as many packs as the cluster trains at once (``schedule``), each pack one trial
and one worker group that trains its runs in order; a run whose inputs (its upstream, its
model's pretraining run, a probe's features run) are trained by another pack waits for them in
the store (``NeedsWaiter``) while the pack training them is alive (a pack's rank 0 holds a
lease in the store's claims from its first step to its last: ``pack_leases``). Start-up is
paid once per slot, and a short run of one model
overlaps a long pretraining run of another.

Scheduling is list scheduling on estimated cost (``est_cost``): of the runs whose inputs are
placed, the one that can start earliest goes next (the longest chain of work after it breaks
ties), on the slot where it starts earliest. Packs wait only on runs placed to finish before
they start, so with all packs in flight there is no cycle. When they are not all in flight (a
cluster smaller than its ``max_concurrent_trials``: a pack's trial may start while its worker
group waits for CPUs another pack holds), a run whose input's pack has shown no life for
``GRACE_S`` is deferred, not failed: the sweep trains what is left stage by stage afterwards
(w2sray/sweep.py).
"""

from __future__ import annotations

import os
import time
from typing import Any

from w2sray.claims import TTL_S, is_live
from w2sray.packing import model_params
from w2sray.runs import Run
from w2sray.settings import PretrainSettings
from w2sray.store import Store

# How long a run waits for an input that is neither done, failed, nor claimed by anyone (its
# pack has not started yet, or ended without it) before it is deferred to the staged pass.
GRACE_S = float(os.environ.get("W2SRAY_WAIT_GRACE_S", TTL_S))
POLL_S = 1.0
UNKNOWN_PARAMS = 1e8  # a model of unknown size (a hub model not in the defaults table)

# What a run's wait ends with (rank 0 decides; the pack loop shares it with every rank).
WAITING, READY, FAILED, DEFERRED = 0, 1, 2, 3


def est_cost(run: Run) -> float:
    """A run's relative cost for scheduling: parameters x token positions it trains on, plus a
    third of that per position it only predicts (evaluation, features, weak labels)."""
    if run.probe is not None:
        return 1e6  # a head on cached features: about a second whatever the backbone
    params = float(model_params(run.model) or UNKNOWN_PARAMS)
    t, d = run.train, run.dataset
    length = float(t.max_length)
    if isinstance(t, PretrainSettings):
        return params * length * t.steps * t.batch_size
    if run.kind == "features":
        return params * length * (d.n_gt + d.n_weak + d.n_test) / 3
    epochs = float(getattr(t, "epochs", 1))
    n_gt, n_weak, n_test = d.n_gt, d.n_weak, d.n_test
    if run.kind == "gt":  # trains on split A, predicts split B (weak labels) and test
        return params * length * (n_gt * epochs + (n_weak + n_test) / 3)
    return params * length * (n_weak * epochs + n_test / 3)


def schedule(runs: list[Run], slots: int) -> list[list[Run]]:
    """Assign ``runs`` to at most ``slots`` packs, each in the order it trains them (its own
    inputs first). A run's inputs outside ``runs`` are taken as done."""
    by_key = {r.key: r for r in runs}
    order = {r.key: i for i, r in enumerate(runs)}
    inputs = {r.key: [n for n in r.needs if n in by_key] for r in runs}
    readers: dict[str, list[str]] = {k: [] for k in by_key}
    for key, needs in inputs.items():
        for n in needs:
            readers[n].append(key)
    cost = {k: est_cost(r) for k, r in by_key.items()}
    tail: dict[str, float] = {}  # a run's cost plus the longest chain of readers after it

    def chain(k: str) -> float:
        if k not in tail:
            tail[k] = cost[k] + max((chain(c) for c in readers[k]), default=0.0)
        return tail[k]

    for k in by_key:
        chain(k)
    left = {k: len(v) for k, v in inputs.items()}
    ready = [k for k, n in left.items() if n == 0]
    free = [0.0] * max(1, slots)
    finish: dict[str, float] = {}
    packs: list[list[Run]] = [[] for _ in free]

    def start(k: str) -> float:  # the earliest a ready run can start on any slot
        earliest = max((finish[n] for n in inputs[k]), default=0.0)
        return max(min(free), earliest)

    while ready:
        # earliest start first (no slot idles while a run could fill it), then the longest
        # chain of work after it (the critical path starts as early as it can)
        key = min(ready, key=lambda k: (start(k), -tail[k], order[k]))
        ready.remove(key)
        earliest = max((finish[n] for n in inputs[key]), default=0.0)
        slot = min(range(len(free)), key=lambda i: (max(free[i], earliest), i))
        finish[key] = max(free[slot], earliest) + cost[key]
        free[slot] = finish[key]
        packs[slot].append(by_key[key])
        for c in readers[key]:
            left[c] -= 1
            if left[c] == 0:
                ready.append(c)
    if len(finish) != len(by_key):  # content keys cannot form a cycle; a guard all the same
        raise ValueError("runs depend on each other in a cycle")
    return [p for p in packs if p]


def pack_leases(packs: list[list[Run]], since: float) -> dict[str, str]:
    """Each run's pack's lease key (a claim name in the store), unique to this experiment."""
    return {r.key: f"flow-{since:.3f}-{i}" for i, p in enumerate(packs) for r in p}


def needs_of(run: dict[str, Any]) -> list[str]:
    """A run's inputs from its worker config (Run.to_config), as Run.needs gives them."""
    if run.get("features"):
        return [*run.get("upstream", ()), run["features"]]
    pre = run.get("model", {}).get("pretrain")
    return [*run.get("upstream", ()), *([pre] if pre else [])]


def need_role(run: dict[str, Any], need: str) -> str:
    """What an input is to the run that reads it, for the failure message."""
    if need == run.get("model", {}).get("pretrain"):
        return "pretraining"
    return "features" if need == run.get("features") else "upstream"


class NeedsWaiter:
    """Rank 0's view of a pack's inputs: ``poll`` says whether a run can start (READY), must
    fail (FAILED: an input failed at or after ``since``, this sweep's start), must be left for
    later (DEFERRED: an input this pack deferred, or one whose trainer showed no life for
    ``grace`` seconds), or waits (WAITING). An input's trainer is alive when the lease of its
    pack (``leases``: run key -> pack lease) is live, or, for a run of no pack of this
    experiment (another sweep's), when the run's own claim is."""

    def __init__(
        self,
        store: Store,
        since: float,
        grace: float = GRACE_S,
        leases: dict[str, str] | None = None,
    ):
        self.store, self.since, self.grace = store, since, grace
        self.leases = leases or {}
        self.deferred: set[str] = set()
        self._done: set[str] = set()  # complete inputs: not checksummed again at every poll
        self._unclaimed: dict[str, float] = {}

    def poll(self, needs: list[str]) -> tuple[int, str | None]:
        for need in needs:
            if need in self.deferred:
                return DEFERRED, need
            if need in self._done:
                continue
            if self.store.is_complete(need):
                self._done.add(need)
                continue
            failure = self.store.read_failure(need)
            if failure is not None and float(failure.get("time", 0)) >= self.since:
                return FAILED, need
            if is_live(self.store.read_claim(self.leases.get(need, need))):
                self._unclaimed.pop(need, None)
                return WAITING, need
            first = self._unclaimed.setdefault(need, time.time())
            if time.time() - first >= self.grace:
                return DEFERRED, need
            return WAITING, need
        return READY, None
