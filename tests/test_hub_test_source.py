"""Hub datasets' test source of their own (``test_split``), the `datasets` package as an extra,
and `w2sray datasets`. Only the hub download is faked: rows written here in each dataset's hub
schema go through the real make_splits, formatters and spec checks. No network, no Ray."""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter

import pytest

from w2sray import cli
from w2sray.data import DATASETS, make_splits
from w2sray.data import hub as hub_mod
from w2sray.runs import plan_sweep
from w2sray.spec import parse_spec

SHARED = ["a sentence in both splits", "another shared one"]


def sst2_hub() -> dict[str, list[dict]]:
    """stanfordnlp/sst2 in its hub schema: train (60 rows, two of them also validation
    sentences, one with extra spaces), validation (20), test (unlabelled, -1)."""
    train = [{"idx": i, "sentence": f"train {i}", "label": i % 2} for i in range(58)]
    train += [
        {"idx": 58, "sentence": SHARED[0] + "  ", "label": 1},
        {"idx": 59, "sentence": SHARED[1], "label": 0},
    ]
    validation = [{"idx": i, "sentence": f"val {i}", "label": int(i < 12)} for i in range(18)]
    validation += [
        {"idx": 18, "sentence": SHARED[0], "label": 1},
        {"idx": 19, "sentence": SHARED[1], "label": 0},
    ]
    test = [{"idx": i, "sentence": f"test {i}", "label": -1} for i in range(10)]
    return {"train": train, "validation": validation, "test": test}


@pytest.fixture()
def hub(monkeypatch):
    """Fake hub: (hub id, split) -> rows; records every download asked for."""
    data: dict[tuple[str, str], list[dict]] = {}
    calls: list[tuple[str, str]] = []

    def fake(hub_id, split, revision=None, data_dir=None, config=None, dataset=""):
        calls.append((hub_id, split))
        return data[(hub_id, split)]

    monkeypatch.setattr(hub_mod, "load_hub_rows", fake)
    for split, rows in sst2_hub().items():
        data[("stanfordnlp/sst2", split)] = rows
    return data, calls


def test_sst2_trains_on_train_and_tests_on_validation(hub, caplog):
    _, calls = hub
    with caplog.at_level(logging.WARNING):
        s = make_splits("sst2", {}, n_gt=20, n_weak=20, n_test=14, split_seed=0)
    assert calls == [("stanfordnlp/sst2", "train"), ("stanfordnlp/sst2", "validation")]
    assert "2 training row(s) dropped" in caplog.text
    train = s.gt_texts + s.weak_texts
    assert len(set(train)) == 40 and all(t.startswith("train ") for t in train)
    assert set(s.test_texts) <= {f"val {i}" for i in range(18)} | set(SHARED)
    # Balanced on both sides: 20 + 20 from train, 7 + 7 from validation's 13 / 7 classes.
    assert Counter(s.gt_labels + s.weak_labels) == {0: 20, 1: 20}
    assert Counter(s.test_labels) == {0: 7, 1: 7}
    assert set(SHARED) <= set(s.test_texts)  # the test split stays whole: training drops
    truth = {r["sentence"]: r["label"] for r in sst2_hub()["validation"]}
    assert [truth[t] for t in s.test_texts] == s.test_labels
    ids = [set(map(int, i)) for i in (s.gt_ids, s.weak_ids, s.test_ids)]
    assert not ids[0] & ids[1] and not (ids[0] | ids[1]) & ids[2]
    again = make_splits("sst2", {}, n_gt=20, n_weak=20, n_test=14, split_seed=0)
    assert (again.gt_texts, again.test_texts) == (s.gt_texts, s.test_texts)
    other = make_splits("sst2", {}, n_gt=20, n_weak=20, n_test=10, split_seed=1)
    assert other.gt_texts != s.gt_texts and other.test_texts != s.test_texts


def test_test_split_param_and_single_source(hub):
    data, calls = hub
    data[("stanfordnlp/sst2", "dev2")] = sst2_hub()["validation"][8:16]  # 4 per class
    s = make_splits("sst2", {"test_split": "dev2"}, n_gt=4, n_weak=4, n_test=6, split_seed=0)
    assert calls[-1] == ("stanfordnlp/sst2", "dev2") and len(s.test_texts) == 6
    # null: one source, the old behaviour: all three splits cut from the training split.
    s = make_splits("sst2", {"test_split": None}, n_gt=20, n_weak=20, n_test=10, split_seed=0)
    assert calls[-1] == ("stanfordnlp/sst2", "train")
    assert all(t.startswith("train ") or t.strip() in SHARED for t in s.test_texts)


def test_test_split_too_small_or_unlabelled_and_training_shortfall(hub):
    # validation balances to 7 + 7 = 14 examples.
    with pytest.raises(
        ValueError, match=r"stanfordnlp/sst2 split 'validation' gives 14 test examples \(classes"
    ):
        make_splits("sst2", {}, n_gt=4, n_weak=4, n_test=16, split_seed=0)
    assert len(make_splits("sst2", {"balance": False}, 4, 4, 20, 0).test_texts) == 20
    with pytest.raises(ValueError, match="row 0: column 'label'.*unlabelled"):
        make_splits("sst2", {"test_split": "test"}, n_gt=4, n_weak=4, n_test=4, split_seed=0)
    # 58 training rows are left after the overlap: 29 per class.
    with pytest.raises(ValueError, match=r"has 58 training examples \(after dropping 2 also in"):
        make_splits("sst2", {}, n_gt=30, n_weak=30, n_test=4, split_seed=0)


def sciq_row(i: int, question: str | None = None) -> dict:
    return {
        "question": question or f"What is {i}?",
        "distractor3": f"w3 {i}",
        "distractor1": f"w1 {i}",
        "distractor2": f"w2 {i}",
        "correct_answer": f"right {i}",
        "support": f"{i} is right.",
    }


def test_constructed_task_overlap_is_by_row_not_drawn_text(hub):
    """SciQ's text depends on the answer drawn; a train row repeating a test question with the
    same correct answer is still the same row and is dropped."""
    data, _ = hub
    test = [sciq_row(100 + i) for i in range(10)]
    dup = {**sciq_row(7), "question": test[3]["question"], "correct_answer": "right 103"}
    data[("allenai/sciq", "train")] = [sciq_row(i) for i in range(30)] + [dup]
    data[("allenai/sciq", "test")] = test
    s = make_splits("sciq", {}, n_gt=15, n_weak=15, n_test=10, split_seed=0)
    train = s.gt_texts + s.weak_texts
    assert not any(test[3]["question"] in t for t in train)
    assert sorted(t.split("\n")[0] for t in s.test_texts) == sorted(
        f"Question: {r['question']}" for r in test
    )
    assert Counter(s.test_labels) == {0: 5, 1: 5}  # balanced by construction
    with pytest.raises(ValueError, match=r"has 30 training examples \(after dropping 1"):
        make_splits("sciq", {}, n_gt=16, n_weak=15, n_test=10, split_seed=0)


def spec_raw(datasets: list[dict], storage: str = "/tmp/unused") -> dict:
    return {
        "name": "unit",
        "storage": storage,
        "datasets": datasets,
        "models": ["w2s-tiny-1", "w2s-tiny-2"],
        "methods": ["xent"],
    }


def keys(datasets: list[dict]) -> set[str]:
    return {r.key for r in plan_sweep(parse_spec(spec_raw(datasets), "s.yaml")).all_runs()}


def test_run_keys_follow_the_test_split():
    sizes = {"n_gt": 20, "n_weak": 20, "n_test": 10}
    default = keys([{"name": "boolq", **sizes}])
    assert keys([{"name": "boolq", "params": {"test_split": "validation"}, **sizes}]) == default
    single = keys([{"name": "boolq", "params": {"test_split": None}, **sizes}])
    assert not single & default
    with pytest.raises(Exception, match="test_split 'train' is the training split"):
        keys([{"name": "boolq", "params": {"test_split": "train"}, **sizes}])


def write_spec(tmp_path, datasets: list[dict]) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(spec_raw(datasets, str(tmp_path / "store"))))
    return str(path)


def test_missing_datasets_package_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails, find_spec None
    sizes = {"n_gt": 20, "n_weak": 20, "n_test": 10}
    spec = write_spec(tmp_path, [{"name": "synthetic", **sizes}, {"name": "sst2", **sizes}])
    assert cli.main(["run", spec]) == 2  # before Ray starts
    err = capsys.readouterr().err
    assert (
        "spec.yaml: datasets[1]: dataset 'sst2' needs the `datasets` package, which is not "
        "installed: pip install 'w2sray[hub]'"
    ) in err
    assert "datasets[0]" not in err
    assert not (tmp_path / "store").exists()
    assert cli.main(["plan", spec]) == 0  # plan runs nothing: it notes the problem
    assert (
        "note: datasets[1]: dataset 'sst2' needs the `datasets` package" in capsys.readouterr().out
    )
    with pytest.raises(ImportError) as exc:  # at load time, in a worker, the same fix
        DATASETS["boolq"].load(10, 0)
    assert "dataset 'boolq' loads 'google/boolq'" in str(exc.value)
    assert "pip install 'w2sray[hub]'" in str(exc.value)


def test_datasets_command_lists_every_entry(capsys):
    assert cli.main(["datasets"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name, entry in DATASETS.items():
        (row,) = [ln for ln in lines if ln.startswith(name + " ")]
        assert entry.source in row and entry.splits in row
    (sst2,) = [ln for ln in lines if ln.startswith("sst2 ")]
    assert "A, B: train; test: validation" in sst2
    assert "params: split=train test_split=validation revision=null" in out
    assert f"{len(DATASETS)} datasets" in out
    assert cli.main(["datasets", "anthropic_hh"]) == 0
    one = capsys.readouterr().out
    assert "source: Anthropic/hh-rlhf" in one and "  test_split: test" in one
    assert "  data_dir: null" in one
    assert cli.main(["datasets", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["datasets", "--help"])
    assert exc.value.code == 0 and "w2sray[hub]" in capsys.readouterr().out
