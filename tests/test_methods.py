"""Methods beyond naive fine-tuning, without Ray: their spec validation, the runs they plan
(bootstrapping chains, generative fine-tuning, searches), and the pieces of the training loop
they add (the search's data cut, the LM targets, the two-phase lr schedule)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from w2sray.data import make_splits
from w2sray.methods.generative import report_pairs as generative_pairs
from w2sray.methods.search_trial import search_inputs
from w2sray.models import W2SClassifier, load_model
from w2sray.models.head import lm_labels
from w2sray.runs import plan_sweep
from w2sray.spec import SpecError, parse_spec
from w2sray.train.steps import _lr_lambda

LADDER = ["w2s-tiny-1", "w2s-tiny-2", "w2s-tiny-3", "w2s-tiny-4"]


def raw(*methods: dict) -> dict:
    return {
        "name": "m",
        "storage": "/unused",
        "datasets": [{"name": "synthetic", "n_gt": 20, "n_weak": 30, "n_test": 10}],
        "models": [{"name": n[-1], "source": n} for n in LADDER],  # names "1".."4"
        "methods": list(methods) or [{"name": "xent", "loss": "xent"}],
        "seeds": [0, 1],
        "train": {"epochs": 1.0, "batch_size": 8, "lr": 0.001},
    }


def plan(*methods: dict):
    return plan_sweep(parse_spec(copy.deepcopy(raw(*methods)), "m.yaml"))


def problems(*methods: dict) -> list[str]:
    with pytest.raises(SpecError) as err:
        parse_spec(copy.deepcopy(raw(*methods)), "m.yaml")
    assert all(p for p in err.value.problems)
    return err.value.problems


# --- spec -----------------------------------------------------------------------------------


def test_bad_method_extras_are_named():
    found = problems(
        {"name": "p", "loss": "xent", "pairs": [["3", "1"], ["1", "9"], ["1", "2", "3"]]},
        {"name": "c", "loss": "xent", "chains": [["1", "2"]]},
        {"name": "g", "loss": "xent", "generative": {"epochs": 0, "lr": -1}},
        {"name": "g2", "loss": "xent", "generative": "yes"},
        {
            "name": "s",
            "loss": "logconf",
            "params": {"alpha_max": [0.2, 0.4]},
            "search": {
                "space": {"alpha_max": [0.1, 0.9], "beta": [1, 2], "lr": {"low": 0, "high": 1}},
                "metric": "test",
                "val_frac": 0.95,
                "num_samples": 0,
            },
        },
        {"name": "s2", "loss": "xent", "bootstrap": True, "search": {"space": {"lr": [2, 1]}}},
    )
    text = "\n".join(found)
    for needle in [
        "methods[0].pairs[0]: models must follow the ladder order",
        "methods[0].pairs[1]: unknown model(s) ['9']",
        "methods[0].pairs[2]: a pair is [weak, strong]",
        "methods[1].chains[0]: must be a list of at least 3 model names",
        "methods[2].generative.epochs: must be > 0",
        "methods[2].generative.lr: must be > 0",
        "methods[3].generative: must be true, false or a mapping",
        "methods[4].search.metric: must be weak_val or gt_val (never test)",
        "methods[4].search.val_frac",
        "methods[4].search.num_samples",
        "methods[4].search.space.alpha_max: also a grid axis",
        "methods[4].search.space.beta: not a parameter of loss 'logconf'",
        "methods[4].search.space.lr: lr must be > 0",
        "methods[5].search: a search cannot be combined with bootstrap",
        "methods[5].search.space.lr: low must be below high",
    ]:
        assert needle in text, (needle, text)


# --- plan -----------------------------------------------------------------------------------


def test_bootstrap_chains_every_pair_with_rungs_between_and_shares_prefixes():
    p = plan({"name": "boot", "loss": "xent", "bootstrap": True})
    per_seed = [r for r in p.transfer if r.seed == 0]
    # pairs with rungs between: 1->3 (1,2,3), 1->4 (1,2,3,4), 2->4 (2,3,4). Steps: 1->2,
    # 1->2->3, 1->2->3->4, 2->3, 2->3->4: the chains to 3 and to 4 share their first two steps.
    assert len(per_seed) == 5
    results = [r for r in p.manifest_rows() if r["role"] == "result" and r["kind"] == "transfer"]
    pairs = sorted((r["weak"], r["model"]) for r in results if r["seed"] == 0)
    assert pairs == [("1", "3"), ("1", "4"), ("2", "4")]
    by_key = {r.key: r for r in p.transfer}
    gt = {(r.model.name, r.seed): r.key for r in p.gt}
    final = next(r for r in results if (r["weak"], r["model"], r["seed"]) == ("1", "4", 0))
    run = by_key[final["key"]]
    assert run.depth == 3 and final["weak_key"] == gt[("1", 0)]
    mid = by_key[run.upstream[0]]
    first = by_key[mid.upstream[0]]
    assert (mid.model.name, first.model.name) == ("3", "2")
    assert first.upstream == (gt[("1", 0)],)
    # 1->2 is planned but reported as nobody's result; 1->2->3 is also the chain 1->3's result
    steps = {r["key"] for r in p.manifest_rows() if r["role"] == "step" and r["seed"] == 0}
    assert steps == {
        first.key,
        next(r.key for r in per_seed if r.weak_model == "2" and r.depth == 1),
    }
    to_3 = next(r for r in results if (r["weak"], r["model"], r["seed"]) == ("1", "3", 0))
    assert to_3["key"] == mid.key
    assert [s for s, _ in p.stages] == ["gt", "transfer", "chain-2", "chain-3"]


def test_explicit_chain_and_pairs_restrict_the_method():
    p = plan(
        {"name": "xent", "loss": "xent", "pairs": [["1", "2"]]},
        {"name": "boot", "loss": "xent", "chains": [["1", "2", "4"]]},
    )
    rows = [r for r in p.manifest_rows() if r["seed"] == 0 and r["kind"] == "transfer"]
    placed = sorted((r["method"], r["weak"], r["model"], r["role"]) for r in rows)
    # 1->2 is both xent's result and the chain's first step: one run, one row as xent
    assert placed == [("boot", "1", "4", "result"), ("xent", "1", "2", "result")]
    assert len([r for r in p.transfer if r.seed == 0]) == 2


def test_generative_changes_the_key_only_where_used():
    plain = plan({"name": "xent", "loss": "xent"})
    both = plan(
        {"name": "xent", "loss": "xent"},
        {"name": "gen", "loss": "xent", "generative": {"epochs": 2, "lr": 1e-4}},
    )
    assert {r.key for r in plain.all_runs()} <= {r.key for r in both.all_runs()}
    gen = [r for r in both.transfer if r.method == "gen"]
    assert len(gen) == len(plain.transfer)
    assert all(r.generative == {"epochs": 2.0, "lr": 1e-4} for r in gen)
    assert all("generative" in r.content() for r in gen)
    assert all("generative" not in r.content() for r in plain.all_runs())


def test_search_plans_one_search_per_pair_and_seed():
    method = {
        "name": "tpe",
        "loss": "logconf",
        "params": {"warmup_frac": 0.1},
        "search": {
            "space": {"alpha_max": [0, 1], "lr": {"low": "1e-4", "high": 1e-2, "log": True}}
        },
    }
    p = plan(method)
    assert p.transfer == () and len(p.searches) == 6 * 2  # 6 pairs x 2 seeds
    s = p.searches[0]
    assert s.space == {"alpha_max": (0.0, 1.0, False), "lr": (1e-4, 1e-2, True)}
    trial = s.trial_run({"alpha_max": 0.3, "lr": 2e-3})
    assert trial.kind == "search" and trial.val_frac == 0.2
    assert trial.loss_params == {"alpha_max": 0.3, "warmup_frac": 0.1}
    assert trial.train.lr == 2e-3 and trial.upstream == s.base.upstream
    final = s.final_run({"alpha_max": 0.3, "lr": 2e-3})
    assert final.kind == "transfer" and final.val_frac == 0.0
    assert final.variant == "tpe[search:weak_val]" and final.key != trial.key
    assert final.describe()["hparams"] == '{"alpha_max":0.3,"lr":0.002,"warmup_frac":0.1}'
    assert final.search_key == s.key and trial.search_key is None
    assert json.loads(trial.describe()["hparams"]) == {"alpha_max": 0.3, "warmup_frac": 0.1}
    # a method whose name says "search" is not a selected run for all that
    named = plan({"name": "research", "loss": "xent"}).transfer[0]
    assert named.search_key is None and "lr" not in json.loads(named.describe()["hparams"])
    assert len({x.key for x in p.searches}) == len(p.searches)
    gt_selected = plan({**method, "search": {**method["search"], "metric": "gt_val"}})
    assert gt_selected.searches[0].key != s.key
    assert gt_selected.searches[0].label == "tpe[search:gt_val]"


# --- the search never reads test labels ------------------------------------------------------


def test_search_inputs_are_split_b_only_and_fixed_across_trials():
    splits = make_splits("synthetic", {}, 50, 100, 40, split_seed=4)
    weak_p1 = np.linspace(0.05, 0.95, 100)
    a = search_inputs(splits.weak_texts, splits.weak_labels, weak_p1, 0.25, 4)
    b = search_inputs(splits.weak_texts, splits.weak_labels, weak_p1, 0.25, 4)
    assert len(a.val_texts) == 25 and len(a.train_texts) == 75
    assert a.val_texts == b.val_texts and np.array_equal(a.train_targets, b.train_targets)
    assert set(a.val_texts).isdisjoint(a.train_texts) or len(set(splits.weak_texts)) < 100
    assert set(a.val_texts) | set(a.train_texts) == set(splits.weak_texts)
    # soft weak labels for training, hard weak labels and ground truth for validation
    np.testing.assert_allclose(a.train_targets.sum(1), 1.0, rtol=1e-6)
    assert set(np.unique(a.val_weak)) <= {0, 1}
    test_texts = set(splits.test_texts)
    assert test_texts.isdisjoint(a.val_texts) and test_texts.isdisjoint(a.train_texts)


def test_search_trial_outcome_cannot_depend_on_test_labels():
    """The trial's whole input is split B and the upstream labels: relabel the test split and
    nothing a trial trains or validates on changes (make_splits cuts by position, not label)."""
    import w2sray.data as data

    splits = make_splits("synthetic", {}, 50, 100, 40, split_seed=1)
    flipped = data.Splits(
        **{
            **splits.__dict__,
            "test_labels": [1 - y for y in splits.test_labels],
            "test_texts": ["poisoned"] * len(splits.test_texts),
        }
    )
    p1 = np.random.default_rng(0).random(100)
    a = search_inputs(splits.weak_texts, splits.weak_labels, p1, 0.2, 1)
    b = search_inputs(flipped.weak_texts, flipped.weak_labels, p1, 0.2, 1)
    assert a.train_texts == b.train_texts and a.val_texts == b.val_texts
    assert np.array_equal(a.val_gt, b.val_gt) and np.array_equal(a.val_weak, b.val_weak)


# --- generative pieces ------------------------------------------------------------------------


def test_lm_labels_ignore_padding_and_the_token_after_left_padding():
    ids = torch.tensor([[5, 6, 7, 0], [0, 0, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]])
    assert lm_labels(ids, mask).tolist() == [[5, 6, 7, -100], [-100, -100, -100, 9]]


def test_classifier_with_lm_shares_the_backbone_and_gives_an_lm_loss():
    loaded = load_model("w2s-tiny-1", seed=0, lm_head=True)
    model = W2SClassifier(loaded.backbone, loaded.pooling, lm=loaded.lm)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("backbone.") for n in names)  # registered once, via the LM
    ids = torch.randint(3, 20, (2, 6))
    mask = torch.ones_like(ids)
    loss = model(ids, mask, lm_loss=True)
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    emb = loaded.backbone.wte.weight
    assert emb.grad is not None and emb.grad.abs().sum() > 0  # the LM phase trains the body
    assert model(ids, mask).shape == (2, 2)


def test_two_phase_lr_schedule():
    f = _lr_lambda(total=10, warmup_frac=0.0, before=4, before_scale=0.5)
    assert f(0) == pytest.approx(0.5)  # generative phase at half the lr, cosine over 4 steps
    assert f(3) < f(0)
    assert f(4) == pytest.approx(1.0)  # classification restarts its own schedule
    assert f(13) < f(4)
    plain = _lr_lambda(10, 0.0)
    assert [plain(i) for i in range(10)] == [f(i + 4) for i in range(10)]


def test_generative_pairs_match_loss_and_hparams():
    rows = pd.DataFrame(
        {
            "dataset": ["d"] * 4,
            "variant": ["xent", "xent+gen", "aux(a=1)", "aux(a=1)+gen"],
            "loss": ["xent", "xent", "logconf", "logconf"],
            "hparams": ["{}", "{}", '{"a":1}', '{"a":1}'],
            "generative": [False, True, False, True],
            "chain_length": [2, 2, 2, 2],
        }
    )
    assert generative_pairs(rows) == [("xent", "xent+gen"), ("aux(a=1)", "aux(a=1)+gen")]
    rows["generative"] = [False, np.nan, False, np.nan]  # rows from before the column existed
    assert generative_pairs(rows) == []


# --- several searches in one Tuner ------------------------------------------------------------


def test_multisearch_keeps_each_search_within_its_budget_and_limit():
    from ray.tune.search import Searcher

    from w2sray.methods.search_tune import OBJECTIVE, MultiSearch, best_of

    method = {
        "name": "tpe",
        "loss": "logconf",
        "pairs": [["1", "2"], ["1", "3"]],
        "search": {"space": {"alpha_max": [0.2, 0.8]}, "num_samples": 3, "max_concurrent": 2},
    }
    searches = list(plan(method).searches[:2])
    finished: dict = {}
    multi = MultiSearch(searches, lambda s, trials: finished.setdefault(s.key, list(trials)))
    configs = {f"t{i}": multi.suggest(f"t{i}") for i in range(5)}
    # two per search in flight, then both at their limit
    assert [c is not None for c in configs.values()] == [True, True, True, True, False]
    owners = [c["search_key"] for c in configs.values() if c]
    assert owners.count(searches[0].key) == 2 and owners.count(searches[1].key) == 2
    assert all(0.2 <= c["alpha_max"] <= 0.8 for c in configs.values() if c)
    s0, s1 = searches[0].key, searches[1].key
    assert [configs[t]["search_key"] for t in ("t0", "t1", "t2", "t3")] == [s0, s1, s0, s1]
    multi.on_trial_complete("t0", {OBJECTIVE: 0.6, "run_key": "k0"})
    multi.on_trial_complete("t2", None, error=True)
    t5 = multi.suggest("t5")
    assert t5["search_key"] == s0  # its slots freed up; s1 is still full
    assert multi.suggest("t6") is None  # s0 has used its 3 samples, s1 is at its limit
    multi.on_trial_complete("t5", {OBJECTIVE: 0.65, "run_key": "k5"})
    done = finished[s0]
    assert [t["error"] is None for t in done] == [True, False, True]
    assert best_of(done)["value"] == 0.65
    assert best_of(done)["values"] == {"alpha_max": t5["alpha_max"]}
    assert best_of(done)["run_key"] == "k5"
    assert s1 not in finished
    multi.on_trial_complete("t1", {OBJECTIVE: 0.9, "run_key": "k1"})
    assert multi.suggest("t7")["search_key"] == s1
    assert multi.suggest("t8") == Searcher.FINISHED  # every sample handed out
    for tid in ("t3", "t7"):
        multi.on_trial_complete(tid, None, error=True)
    assert best_of(finished[s1])["values"] == {"alpha_max": configs["t1"]["alpha_max"]}


def test_each_search_samples_its_own_points_reproducibly():
    """One spec seed, yet every pair's search explores its own points (a shared sampler seed
    made every pair's random startup trials identical); the same search repeats them."""
    from w2sray.methods.search_tune import optuna_search

    method = {
        "name": "tpe",
        "loss": "logconf",
        "search": {"space": {"alpha_max": [0.1, 0.9]}, "num_samples": 4},
    }
    a, b = plan(method).searches[:2]
    first = [optuna_search(s).suggest("t0")["alpha_max"] for s in (a, b, a)]
    assert first[0] != first[1] and first[0] == first[2]


TRACEBACK = 'Traceback (most recent call last):\n  File "loop.py", line 3, in f\nValueError: boom\n'


def test_a_failed_search_is_listed_with_its_trials_error_until_it_succeeds(tmp_path):
    """A search with no successful trial is recorded under its key, with the error of its first
    failed trial, and the report lists it like a failed run; its stored record clears it."""
    from w2sray.analysis.collect import collect
    from w2sray.analysis.report import write_report
    from w2sray.methods.search_tune import search_failure
    from w2sray.runs import manifest
    from w2sray.store import Store

    method = {"name": "tpe", "loss": "logconf", "search": {"space": {"alpha_max": [0.2, 0.8]}}}
    spec = parse_spec(copy.deepcopy(raw(method)), "m.yaml")
    p = plan_sweep(spec)
    s = p.searches[0]
    store = Store(str(tmp_path / "store"))
    store.write_manifest(spec.name, manifest(spec, p))
    trials = [{"values": {"alpha_max": 0.3}, "error": "trial failed"}]
    trial_key = s.trial_run(trials[0]["values"]).key
    store.record_failure(trial_key, {"key": trial_key, "error": TRACEBACK})
    store.record_failure(s.key, search_failure(s, "every trial failed", store, trials))

    failures = collect(store).failures
    assert list(failures["run_key"]) == [s.key]  # the trial is not a report row; its search is
    row = failures.iloc[0]
    assert row["kind"] == "search" and row["variant"] == "tpe[search:weak_val]"
    assert row["model"] == "2" and row["error"].endswith("ValueError: boom\n")
    t = collect(store)
    write_report(t.results, t.gt, t.failures, t.ladder, tmp_path / "report")
    summary = (tmp_path / "report" / "summary.md").read_text()
    where = "(search, synthetic, 2, tpe[search:weak_val])"
    assert f"`{s.key}` {where}: `every trial failed; its first failed trial's error: " in summary
    assert "ValueError: boom`" in summary and "Traceback" not in summary

    store.write_search(s.key, {**s.describe(), "trials": [], "best": {"alpha_max": 0.5}})
    assert s.key not in {f["key"] for f in store.failures()}
    assert collect(store).failures.empty


def test_a_search_without_weak_labels_is_recorded_failed_unless_it_has_a_record(tmp_path):
    """Through execute(): a search whose weak GT run has no result is recorded under its key;
    one that was already searched is not (nothing would ever clear that failure), and its
    selected run is the one blocked. Nothing here can run, so no Ray cluster starts."""
    from w2sray.runs import Plan
    from w2sray.store import Store
    from w2sray.sweep import execute

    method = {"name": "tpe", "loss": "logconf", "search": {"space": {"alpha_max": [0.2, 0.8]}}}
    spec = parse_spec(copy.deepcopy(raw(method)), "m.yaml")
    s = plan_sweep(spec).searches[0]
    store = Store(str(tmp_path / "store"))
    only_search = Plan(gt=(), transfer=(), searches=(s,))

    out = execute(spec, only_search, store, printer=lambda m: None)
    assert list(out.failed) == [s.key] and "upstream" in out.failed[s.key]
    assert store.read_failure(s.key)["kind"] == "search"

    best = {"alpha_max": 0.5}
    store.write_search(s.key, {**s.describe(), "trials": [], "best": best})
    assert store.read_failure(s.key) is None  # a stored result clears it
    out = execute(spec, only_search, store, printer=lambda m: None)
    selected = s.final_run(best)
    assert list(out.failed) == [selected.key] and out.searched == [s.key]
    assert [f["key"] for f in store.failures()] == [selected.key]
