"""Dataflow execution (w2sray/dataflow.py): the schedule of a sweep's runs across stages into one
pack per slot, a run's wait for inputs other packs train, and real sweeps on the session's Ray
cluster: one experiment for every stage, a failed input failing its readers in other packs, a
deferred run trained by the staged pass afterwards."""

from __future__ import annotations

import copy
import os
import time

import pytest

from w2sray import dataflow
from w2sray.claims import Lease
from w2sray.dataflow import (
    DEFERRED,
    FAILED,
    READY,
    WAITING,
    NeedsWaiter,
    est_cost,
    needs_of,
    schedule,
)
from w2sray.runs import plan_sweep
from w2sray.spec import SpecError, parse_spec
from w2sray.store import Store
from w2sray.sweep import dataflow_ok, execute, result_grid

RAW = {
    "name": "flow",
    "storage": "unused",
    "datasets": [{"name": "synthetic", "n_gt": 96, "n_weak": 96, "n_test": 64}],
    "models": ["w2s-tiny-1", "w2s-tiny-2"],
    "methods": ["xent"],
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 24},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}
PRETRAIN = {"corpus": {"dataset": "synthetic", "n": 64, "seed": 1}, "steps": 4, "batch_size": 8}


def spec_of(**changes):
    raw = copy.deepcopy(RAW)
    raw.update(changes)
    return parse_spec(raw)


def quickstart_plan():
    from w2sray.spec import load_spec

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return plan_sweep(load_spec(os.path.join(root, "sweeps", "quickstart.yaml")))


def _positions(packs):
    return {r.key: (i, j) for i, p in enumerate(packs) for j, r in enumerate(p)}


def _check(runs, packs, slots):
    """Every run placed once; inside a pack its own inputs first; no cycle of waits."""
    assert 1 <= len(packs) <= slots and all(packs)
    pos = _positions(packs)
    assert sorted(pos) == sorted(r.key for r in runs)
    # A run waits on its inputs; a pack waits on its own earlier runs. That graph must have no
    # cycle, or packs in flight together could wait on each other for ever.
    waits = {r.key: [n for n in r.needs if n in pos] for r in runs}
    for key, (i, j) in pos.items():
        if j:
            waits[key].append(packs[i][j - 1].key)
    state: dict[str, int] = {}

    def visit(k):
        assert state.get(k) != 1, f"wait cycle through {k}"
        if state.get(k) == 2:
            return
        state[k] = 1
        for n in waits[k]:
            visit(n)
        state[k] = 2

    for k in pos:
        visit(k)
    for run in runs:
        i, j = pos[run.key]
        assert all(pos[n][1] < j for n in run.needs if n in pos and pos[n][0] == i)


@pytest.mark.parametrize("slots", [1, 2, 3, 20])
def test_schedule_places_every_run_once_with_inputs_first_and_no_wait_cycle(slots):
    runs = quickstart_plan().all_runs()
    _check(runs, schedule(runs, slots), slots)
    _check(runs, schedule(runs[::-1], slots), slots)  # given readers before their inputs


def test_schedule_starts_the_longest_chain_first_and_fills_the_other_slot():
    """The quickstart on 2 slots: the strongest model's pretraining (the longest chain) starts
    at once on one slot; the other pretrains the smaller models and trains their runs meanwhile
    instead of idling until the stage ends."""
    plan = quickstart_plan()
    longest = max(plan.pretrain, key=est_cost)
    packs = schedule(plan.all_runs(), 2)
    firsts = {p[0].key for p in packs}
    assert longest.key in firsts
    other = next(p for p in packs if p[0].key != longest.key)
    kinds = [r.kind for r in other]
    assert kinds[:2] == ["pretrain", "pretrain"] and "gt" in kinds and "transfer" in kinds
    # one slot: a single pack, every stage in order of inputs
    (only,) = schedule(plan.all_runs(), 1)
    assert len(only) == len(plan.all_runs())


def test_needs_of_a_worker_config_are_the_runs_needs():
    raw = copy.deepcopy(RAW)
    raw["models"] = ["w2s-tiny-1", {"name": "b", "source": "w2s-tiny-2", "pretrain": PRETRAIN}]
    plan = plan_sweep(parse_spec(raw))
    probes = plan_sweep(spec_of(train={**RAW["train"], "probe": {"head": "logreg"}}))
    runs = [*plan.all_runs(), *probes.all_runs()]
    assert any(r.model.pretrain and r.upstream for r in runs)  # both kinds of input
    assert any(r.features for r in runs)
    for run in runs:
        assert needs_of(run.to_config()) == list(run.needs)


def test_est_cost_orders_runs_by_work():
    plan = quickstart_plan()
    by = {(r.kind, r.model.name): est_cost(r) for r in plan.all_runs() if r.kind != "transfer"}
    assert by[("pretrain", "w2s-tiny-3")] > by[("pretrain", "w2s-tiny-1")]
    assert by[("pretrain", "w2s-tiny-1")] > by[("gt", "w2s-tiny-1")]  # 3000 steps x 32 vs 12k


def _complete(store: Store, key: str) -> None:
    assert store.write_run(key, {"metrics.json": b"{}"})


def test_waiter_ready_failed_waiting_and_deferred(tmp_path):
    store = Store(str(tmp_path / "store"))
    since = time.time()
    waiter = NeedsWaiter(store, since, grace=0.3)
    _complete(store, "gt-done")
    assert waiter.poll(["gt-done"]) == (READY, None)
    # a failure recorded before this sweep started is an old one: the run is retried here
    store.record_failure("gt-old", {"error": "x", "time": since - 10})
    lease = Lease(store, "gt-old", ttl=60)
    assert lease.acquire()  # claimed: being trained by a pack
    assert waiter.poll(["gt-done", "gt-old"]) == (WAITING, "gt-old")
    time.sleep(0.4)
    assert waiter.poll(["gt-old"]) == (WAITING, "gt-old")  # claimed: no grace runs out
    store.record_failure("gt-old", {"error": "x", "time": time.time()})
    assert waiter.poll(["gt-done", "gt-old"]) == (FAILED, "gt-old")
    # unclaimed (its pack not started): waited for, then deferred once the grace is over
    assert waiter.poll(["gt-nobody"]) == (WAITING, "gt-nobody")
    time.sleep(0.4)
    assert waiter.poll(["gt-nobody"]) == (DEFERRED, "gt-nobody")
    # an input this pack deferred defers its readers at once
    waiter.deferred.add("gt-mine")
    assert waiter.poll(["gt-done", "gt-mine"]) == (DEFERRED, "gt-mine")
    lease.release()


def test_a_pack_holds_its_lease_while_it_trains_even_over_a_dead_attempts(tmp_path):
    """What tells waiting packs that an input's pack is alive: its lease, live from the first
    run to the last, written even where a killed earlier attempt of the same pack left its own
    live claim (a worker group restarted by max_failures), and gone afterwards."""
    from w2sray.claims import is_live
    from w2sray.train.pack import holding

    store = Store(str(tmp_path / "store"))
    assert Lease(store, "flow-1-0", ttl=60).acquire()  # the dead attempt's, still live
    with holding(store, "flow-1-0", ttl=0.4):
        first = store.read_claim("flow-1-0")
        assert is_live(first)
        time.sleep(0.6)  # longer than the ttl: renewed meanwhile
        assert is_live(store.read_claim("flow-1-0"))
        assert store.read_claim("flow-1-0")["owner"] == first["owner"]
    assert store.read_claim("flow-1-0") is None
    with holding(store, None):  # not a dataflow pack, or not rank 0: nothing held
        assert store.claim_keys() == []


def test_dataflow_is_on_by_default_for_sweeps_of_several_stages_and_one_shape():
    assert spec_of().packing["dataflow"] is True
    assert dataflow_ok(spec_of(), plan_sweep(spec_of()).all_runs())
    gt_only = plan_sweep(spec_of()).gt
    assert not dataflow_ok(spec_of(), list(gt_only))  # one stage: packed as a stage
    off = spec_of(packing={"dataflow": False})
    assert not dataflow_ok(off, plan_sweep(off).all_runs())
    alone = spec_of(packing={"max_runs": 1})
    assert not dataflow_ok(alone, plan_sweep(alone).all_runs())
    mixed = copy.deepcopy(RAW)
    two = {"name": "b", "source": "w2s-tiny-2", "resources": {"workers": 2}}
    mixed["models"] = ["w2s-tiny-1", two]
    spec = parse_spec(mixed)
    assert not dataflow_ok(spec, plan_sweep(spec).all_runs())  # two worker-group shapes
    with pytest.raises(SpecError) as err:
        spec_of(packing={"dataflow": "yes"})
    assert any(p.startswith("packing.dataflow") for p in err.value.problems)


def test_one_experiment_for_every_stage_and_a_failed_input_fails_its_readers(ray_cluster, tmp_path):
    """A sweep with pretraining, GT and transfers, one model broken (no weights): one Tune
    experiment for all stages; the broken model's GT fails with its own error, and the
    transfers from it, in whichever pack, fail as blocked by it; every other run trains, and
    its metrics are a row of the experiment's ResultGrid with its run key."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt2", "n_layer": 1}')  # no weights
    spec = spec_of(
        storage=str(tmp_path / "store"),
        models=[
            {"name": "broken", "source": str(broken)},
            {"name": "small", "source": "w2s-tiny-1", "pretrain": PRETRAIN},
            "w2s-tiny-2",
        ],
    )
    plan = plan_sweep(spec)
    assert dataflow_ok(spec, plan.all_runs())
    lines: list[str] = []
    out = execute(spec, plan, Store(spec.storage), printer=lines.append)
    (bad,) = [r.key for r in plan.gt if r.model.name == "broken"]
    blocked = {r.key for r in plan.transfer if r.weak_model == "broken"}
    assert len(blocked) == 2
    assert set(out.failed) == {bad, *blocked}
    assert sorted(out.done) == sorted(r.key for r in plan.all_runs() if r.key not in out.failed)
    store = Store(spec.storage)
    for key in blocked:
        assert f"upstream run {bad} has no result" in store.read_failure(key)["error"]
    assert "broken-model" in store.read_failure(bad)["error"]
    experiments = os.listdir(store.ray_storage_path())
    assert "flow-runs" in experiments and not {"flow-pretrain", "flow-gt"} & set(experiments)
    assert any(line.startswith("[runs] ") and "done" in line for line in lines)
    frames = [r.metrics_dataframe for r in result_grid(store, "flow-runs")]
    reported = {k for df in frames if df is not None for k in df.get("run_key", [])}
    assert set(out.done) <= reported
    again = execute(spec, plan, store, printer=lines.append)
    assert again.done == [] and sorted(again.skipped) == sorted(out.done)


def test_a_deferred_run_is_trained_by_the_staged_pass(ray_cluster, tmp_path, monkeypatch):
    """A run whose input no live pack trains (here: left out of every pack; on a real cluster,
    in a pack whose worker group has not started) is deferred after the grace, neither failed
    nor done, and the staged pass afterwards trains its input and then it."""
    spec = spec_of(storage=str(tmp_path / "store"))
    plan = plan_sweep(spec)
    (transfer,) = plan.transfer
    weak_gt = next(r for r in plan.gt if r.key == transfer.upstream[0])
    strong_gt = next(r for r in plan.gt if r.key != weak_gt.key)
    monkeypatch.setattr(dataflow, "GRACE_S", 1.0)
    monkeypatch.setattr(dataflow, "schedule", lambda runs, slots: [[transfer], [strong_gt]])
    lines: list[str] = []
    out = execute(spec, plan, Store(spec.storage), printer=lines.append)
    assert out.failed == {}
    assert sorted(out.done) == sorted(r.key for r in plan.all_runs())
    staged = [line for line in lines if not line.startswith("[runs]")]
    assert any(line.startswith("[gt] 1 runs") for line in staged), lines
    assert any(line.startswith("[transfer] 1 runs") for line in staged), lines
    assert Store(spec.storage).read_failure(transfer.key) is None
