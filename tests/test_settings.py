"""Typed run settings (w2sray/settings.py): what the workers read back from a run's config is
exactly what its key hashed, for every kind of run a plan makes."""

from __future__ import annotations

from w2sray.runs import plan_sweep
from w2sray.settings import (
    CorpusRef,
    FeatureSettings,
    ModelRef,
    PretrainSettings,
    ProbeSettings,
    ProbeTrain,
)
from w2sray.spec import Resources, TrainSettings, parse_spec

PRE = {"corpus": {"dataset": "synthetic", "n": 64, "seed": 1}, "steps": 5}
RAW = {
    "name": "typed",
    "storage": "/unused",
    "datasets": [{"name": "synthetic", "n_gt": 32, "n_weak": 32, "n_test": 16}],
    "models": [
        {"name": "a", "source": "w2s-tiny-1", "pretrain": PRE},
        {"name": "b", "source": "w2s-tiny-2", "train": {"probe": {"head": "linear"}}},
        "w2s-tiny-3",
    ],
    "methods": ["xent"],
    "seeds": [0],
}


def test_workers_read_back_what_the_key_hashed():
    """Every kind of run: its config.json (what a worker gets) parses back into the very
    settings the run holds, and its key hashed their ``as_dict``."""
    plan = plan_sweep(parse_spec(RAW))
    runs = plan.all_runs()
    assert {r.kind for r in runs} == {"pretrain", "features", "gt", "transfer"}
    for run in runs:
        cfg = run.to_config()
        assert ModelRef.from_dict(cfg["model"]) == run.model
        assert type(run.dataset).from_dict(cfg["dataset"]) == run.dataset
        assert type(run.train).from_dict(cfg["train"]) == run.train
        assert Resources(**cfg["resources"]) == run.resources
        content = cfg["content"]
        assert content["train"] == run.train.as_dict() == cfg["train"]
        assert content["model"] == {k: v for k, v in cfg["model"].items() if k != "name"}
    (pre,) = plan.pretrain
    assert isinstance(pre.train, PretrainSettings) and isinstance(pre.dataset, CorpusRef)
    assert pre.model.pooling is None and "pooling" not in pre.to_config()["model"]
    assert pre.train.steps == 5 and pre.loss == "clm"
    (feat,) = plan.features
    assert isinstance(feat.train, FeatureSettings)
    probes = [r for r in runs if r.features]
    assert probes and all(isinstance(r.train, ProbeTrain) for r in probes)
    assert probes[0].probe == ProbeSettings("linear", 10.0, 3e-2, 0.0, 32)  # the run's batch
    tuned = [r for r in runs if r.kind in ("gt", "transfer") and not r.features]
    assert tuned and all(isinstance(r.train, TrainSettings) for r in tuned)


def test_a_config_with_fields_a_worker_does_not_know_still_loads():
    d = {"name": "m", "source": "w2s-tiny-1", "revision": None, "trust_remote_code": False,
         "pooling": "mean", "new_field": 1}  # fmt: skip
    assert ModelRef.from_dict(d).pooling == "mean"
    assert ModelRef.from_dict({**d, "commit": "c" * 40}).load_revision == "c" * 40


def test_datasets_and_corpora_round_trip_through_their_types(tmp_path):
    """A local file with test files (keyed by sha256s) and a file corpus: the optional fields
    a run has are kept, the ones it has not stay absent."""
    from w2sray.settings import DataRef

    rows = "\n".join(f"sentence {i}\t{i % 2}" for i in range(80))
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + rows + "\n")
    (tmp_path / "test.tsv").write_text("sentence\tlabel\n" + rows.replace("sentence", "t") + "\n")
    (tmp_path / "corpus.txt").write_text("one two\nthree four\n")
    local = {"path": str(tmp_path / "train.tsv"), "test_path": str(tmp_path / "test.tsv")}
    local["text_column"] = "sentence"
    raw = {
        **RAW,
        "datasets": [{"name": "local", "params": local, "n_gt": 20, "n_weak": 20, "n_test": 20}],
        "models": [
            {
                "name": "a",
                "source": "w2s-tiny-1",
                "pretrain": {"corpus": {"path": str(tmp_path / "corpus.txt"), "n": 2}, "steps": 2},
            },
            "w2s-tiny-2",
        ],  # fmt: skip
    }
    plan = plan_sweep(parse_spec(raw))
    (pre,) = plan.pretrain
    corpus = pre.dataset
    assert CorpusRef.from_dict(corpus.as_dict()) == corpus
    assert corpus.seed is None and corpus.sha256 and "seed" not in corpus.as_dict()
    for run in plan.gt + plan.transfer:
        data = run.dataset
        assert DataRef.from_dict(data.as_dict()) == data
        assert data.sha256 and len(data.test_sha256) == 1
    plain = plan_sweep(parse_spec(RAW)).gt[0].dataset
    assert plain.sha256 is None and "sha256" not in plain.as_dict()
