"""Pretraining as a sweep stage, without Ray: the spec's recipe, the planned runs and their keys,
corpora, blocking, and the store's model folders. The runs themselves train in
tests/test_methods_integration.py (model b: 2 workers, ZeRO-3)."""

from __future__ import annotations

import copy
import json

import pytest

from w2sray import cli
from w2sray.data.corpus import corpus_dict, load_corpus
from w2sray.runs import plan_sweep
from w2sray.settings import CorpusRef
from w2sray.spec import CorpusSpec, SpecError, parse_spec
from w2sray.store import Store
from w2sray.sweep import Outcome, _runnable

RECIPE = {"corpus": {"dataset": "synthetic", "n": 300, "seed": 5}, "steps": 10}
RAW = {
    "name": "pre",
    "storage": "unused",
    "datasets": [{"name": "synthetic", "n_gt": 40, "n_weak": 40, "n_test": 40}],
    "models": [
        {"name": "small", "source": "w2s-tiny-1", "pretrain": RECIPE},
        {"name": "plain", "source": "w2s-tiny-2"},
        {"name": "big", "source": "w2s-tiny-3", "pretrain": {**RECIPE, "steps": 20}},
    ],
    "methods": ["xent"],
}


def _ref(corpus: CorpusSpec) -> CorpusRef:
    return CorpusRef.from_dict(corpus_dict(corpus))


def spec_with(**model_changes):
    raw = copy.deepcopy(RAW)
    for i, changes in model_changes.items():
        raw["models"][int(i[1:])].update(changes)
    return parse_spec(raw)


def test_recipe_is_parsed_into_typed_settings():
    spec = parse_spec(RAW)
    pre = spec.models[0].pretrain
    assert pre.corpus == CorpusSpec(dataset="synthetic", n=300, seed=5)
    assert (pre.steps, pre.objective, pre.lr) == (10, "clm", 3e-3)
    assert spec.models[1].pretrain is None


@pytest.mark.parametrize(
    "recipe, field, words",
    [
        ({"steps": 5}, "models[0].pretrain.corpus", "dataset"),
        ({"corpus": {}, "steps": 5}, "models[0].pretrain.corpus", "one of dataset"),
        ({"corpus": {"dataset": "nope"}}, "models[0].pretrain.corpus.dataset", "unknown"),
        ({"corpus": {"dataset": "synthetic", "seed": 0}}, "pretrain.corpus.seed", "test doc"),
        ({"corpus": {"path": "/no/such.txt"}}, "models[0].pretrain.corpus.path", "not exist"),
        ({**RECIPE, "objective": "mlm"}, "models[0].pretrain.objective", "clm"),
        ({**RECIPE, "steps": 0}, "models[0].pretrain.steps", ">= 1"),
        ({**RECIPE, "lr": -1}, "models[0].pretrain.lr", "> 0"),
        ({**RECIPE, "stepz": 3}, "models[0].pretrain.stepz", "unknown field"),
        ("yes", "models[0].pretrain", "mapping"),
        ({**RECIPE, "batch_size": 3}, "models[0].pretrain.batch_size", "2 workers"),
    ],
)
def test_bad_recipe_names_the_field(recipe, field, words):
    with pytest.raises(SpecError) as err:
        spec_with(m0={"pretrain": recipe, "resources": {"workers": 2}})
    assert any(field in p and words in p for p in err.value.problems), err.value.problems


def test_bad_recipe_exits_2_and_creates_no_store(tmp_path, capsys):
    raw = copy.deepcopy(RAW)
    raw["storage"] = str(tmp_path / "store")
    raw["models"][0]["pretrain"] = {**RECIPE, "steps": -3}
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(raw))
    assert cli.main(["run", str(path)]) == 2
    assert "models[0].pretrain.steps" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_plan_has_a_pretraining_stage_feeding_every_run_of_the_model():
    plan = plan_sweep(parse_spec(RAW))
    assert [name for name, _ in plan.stages][:2] == ["pretrain", "gt"]
    pre = {r.model.name: r for r in plan.pretrain}
    assert set(pre) == {"small", "big"}
    assert pre["small"].train.steps == 10 and pre["big"].train.steps == 20
    for run in plan.gt + plan.transfer:
        want = pre[run.model.name].key if run.model.name in pre else None
        assert run.model.pretrain == want
        assert run.needs == tuple(run.upstream) + ((want,) if want else ())


def test_keys_follow_the_recipe_and_nothing_else():
    base = plan_sweep(parse_spec(RAW))
    keys = {(r.kind, r.model.name, r.weak_model): r.key for r in base.all_runs()}
    more = plan_sweep(spec_with(m0={"pretrain": {**RECIPE, "steps": 11}}))
    changed = {
        k for k, key in keys.items() if key not in {r.key for r in more.all_runs()}
    }  # every run that reads small's weights, and nothing else
    assert changed == {
        ("pretrain", "small", None),
        ("gt", "small", None),
        ("transfer", "plain", "small"),
        ("transfer", "big", "small"),  # its upstream (small's GT run) changed
    }
    # Pooling matters downstream only: the pretraining run is shared.
    pooled = plan_sweep(spec_with(m0={"pooling": "mean"}))
    assert {r.key for r in pooled.pretrain} == {r.key for r in base.pretrain}
    # Two rungs with one recipe (a ladder by fine-tuning, say) pretrain once.
    twin = copy.deepcopy(RAW)
    twin["models"][1] = {"name": "twin", "source": "w2s-tiny-1", "pretrain": RECIPE}
    twins = plan_sweep(parse_spec(twin))
    assert len(twins.pretrain) == 2  # small's (shared with twin) and big's
    assert {r.key for r in twins.pretrain} == {r.key for r in base.pretrain}


def test_a_file_corpus_is_keyed_by_its_bytes(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one two\n\nthree four\n")
    b.write_text("one two\n\nthree four\n")
    da, db = corpus_dict(CorpusSpec(path=str(a), n=5)), corpus_dict(CorpusSpec(path=str(b), n=5))
    assert load_corpus(CorpusRef.from_dict(da)) == ["one two", "three four"]  # blank lines dropped
    recipe = {"corpus": {"path": str(a), "n": 5}, "steps": 3}
    key_a = plan_sweep(spec_with(m0={"pretrain": recipe})).pretrain[0].key
    recipe_b = {"corpus": {"path": str(b), "n": 5}, "steps": 3}
    assert plan_sweep(spec_with(m0={"pretrain": recipe_b})).pretrain[0].key == key_a
    assert da["sha256"] == db["sha256"]
    b.write_text("one two\nthree five\n")
    assert plan_sweep(spec_with(m0={"pretrain": recipe_b})).pretrain[0].key != key_a


def test_a_table_corpus_reads_its_text_column(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"body": "alpha beta"}\n{"body": "gamma"}\n{"body": "delta"}\n')
    d = corpus_dict(CorpusSpec(path=str(path), n=2, text_column="body"))
    assert load_corpus(CorpusRef.from_dict(d)) == ["alpha beta", "gamma"]
    with pytest.raises(ValueError, match="no column 'text'"):
        load_corpus(_ref(CorpusSpec(path=str(path), n=2)))


def test_a_dataset_corpus_draws_its_own_documents():
    d = corpus_dict(CorpusSpec(dataset="synthetic", n=50, seed=5))
    texts = load_corpus(CorpusRef.from_dict(d))
    assert len(texts) == 50 and texts == load_corpus(CorpusRef.from_dict(d))
    assert texts != load_corpus(_ref(CorpusSpec(dataset="synthetic", n=50, seed=6)))


def test_a_failed_pretraining_run_blocks_only_the_runs_that_need_it(tmp_path):
    plan = plan_sweep(parse_spec(RAW))
    store = Store(str(tmp_path / "store"))
    small = next(r for r in plan.pretrain if r.model.name == "small")
    big = next(r for r in plan.pretrain if r.model.name == "big")
    store.write_run(big.key, {"metrics.json": b"{}"})
    out = Outcome(failed={small.key: "boom"})
    todo = _runnable(plan.gt, store, out)
    assert {r.model.name for r in todo} == {"plain", "big"}
    blocked = [r for r in plan.gt if r.model.name == "small"]
    assert out.failed[blocked[0].key] == f"pretraining run {small.key} has no result"
    assert store.read_failure(blocked[0].key)["error"].startswith("pretraining run")


def test_a_model_folder_is_stored_and_read_back(tmp_path):
    store = Store(str(tmp_path / "store"))
    files = {"model/config.json": b"{}", "model/sub/w.bin": b"123", "metrics.json": b"{}"}
    assert store.write_run("pretrain-x", files)
    assert store.is_complete("pretrain-x")
    folder = store.local_folder("pretrain-x", "model")
    assert open(f"{folder}/sub/w.bin", "rb").read() == b"123"
    (tmp_path / "store" / "runs" / "pretrain-x" / "model" / "sub" / "w.bin").write_bytes(b"x")
    assert not store.is_complete("pretrain-x")  # a changed weight file is caught


def test_a_failed_pretraining_run_is_in_the_report_failures(tmp_path):
    from w2sray.analysis.collect import collect
    from w2sray.runs import manifest
    from w2sray.sweep import _failure

    spec = parse_spec(RAW)
    plan = plan_sweep(spec)
    store = Store(str(tmp_path / "store"))
    store.write_manifest(spec.name, manifest(spec, plan))
    small = next(r for r in plan.pretrain if r.model.name == "small")
    store.record_failure(small.key, _failure(small, RuntimeError("corpus went missing")))
    failures = collect(store).failures
    row = failures[failures["run_key"] == small.key].iloc[0]
    assert row["kind"] == "pretrain" and "corpus went missing" in row["error"]


def test_plan_lists_the_pretraining_runs(tmp_path, capsys):
    raw = copy.deepcopy(RAW)
    raw["storage"] = str(tmp_path / "store")
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(raw))
    assert cli.main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    keys = {r.key for r in plan_sweep(parse_spec(raw)).pretrain}
    listed = [line for line in out.splitlines() if line.startswith("pretrain ")]
    assert {line.split()[1] for line in listed} == keys and all("todo" in x for x in listed)
    assert "2 pretraining, 3 ground-truth" in out
    assert not (tmp_path / "store").exists()  # plan writes nothing
