"""What a run was trained with (w2sray/provenance.py): every run's metrics.json records its
library versions, the tables carry them, and the report warns when the runs it compares were
trained under different sets (library versions are not in the run key)."""

from __future__ import annotations

import json
from importlib import metadata

import torch

from w2sray.analysis.collect import collect
from w2sray.analysis.report import write_report
from w2sray.artifacts import METRICS, SOFTWARE, record_files
from w2sray.provenance import describe, mixed_note, software
from w2sray.store import Store

LADDER = ["weak", "strong"]


def test_every_run_records_the_software_it_was_trained_with():
    files = record_files({"key": "gt-x"}, {"acc": 0.9})
    recorded = json.loads(files[METRICS])
    assert recorded["acc"] == 0.9
    sw = recorded[SOFTWARE]
    assert sw["torch"] == metadata.version("torch") and torch.__version__.startswith(sw["torch"])
    assert sw["transformers"] == metadata.version("transformers")
    assert sw["deepspeed"] == metadata.version("deepspeed") and "python" in sw


def _store(tmp_path, strong_software: dict | None) -> Store:
    """A store holding one sweep: GT runs of two models and one transfer, the strong model's
    runs recorded under ``strong_software`` (None: recorded before software was)."""
    store = Store(str(tmp_path / "store"))
    gt = {"kind": "gt", "method": "ground_truth", "dataset": "d", "seed": 0, "loss": "xent"}
    rows = [
        {**gt, "key": "gt-w", "model": "weak"},
        {**gt, "key": "gt-s", "model": "strong"},
        {
            "kind": "transfer", "key": "tr-ws", "dataset": "d", "model": "strong", "weak": "weak",
            "method": "xent", "loss": "xent", "hparams": "{}", "variant": "xent", "seed": 0,
            "depth": 1, "weak_key": "gt-w", "ceiling_key": "gt-s",
        },
    ]  # fmt: skip
    store.write_manifest("s", {"name": "s", "ladder": LADDER, "runs": rows, "searches": []})
    here = software()

    def put(key: str, acc: float, sw: dict | None) -> None:
        metrics = {"acc": acc, "auc": acc}
        if sw is not None:
            metrics[SOFTWARE] = sw
        store.write_run(key, {METRICS: json.dumps(metrics).encode()})

    put("gt-w", 0.7, here)
    put("gt-s", 0.9, strong_software)
    put("tr-ws", 0.8, strong_software)
    return store


def _summary(tmp_path, store: Store) -> str:
    t = collect(store)
    paths = write_report(t.results, t.gt, t.failures, t.ladder, tmp_path / "report", t.pretrain)
    return paths.summary_md.read_text()


def test_the_report_warns_when_runs_were_trained_under_different_libraries(tmp_path):
    other = {**software(), "transformers": "0.0.1"}
    store = _store(tmp_path, other)
    t = collect(store)
    assert set(t.gt["software"]) == {describe(software()), describe(other)}
    assert t.results["software"].tolist() == [describe(other)]
    summary = _summary(tmp_path, store)
    assert "2 different library sets" in summary and "transformers 0.0.1" in summary
    assert "(2 runs)" in summary and "(1 run)" in summary


def test_no_warning_when_the_runs_agree_or_predate_the_record(tmp_path):
    assert "library sets" not in _summary(tmp_path / "a", _store(tmp_path / "a", software()))
    old = _store(tmp_path / "b", None)
    assert collect(old).results["software"].isna().all()
    assert "library sets" not in _summary(tmp_path / "b", old)
    assert mixed_note([None, describe(software()), None]) is None
