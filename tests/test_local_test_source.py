"""The ``local`` dataset's separate test source (``test_path``): splits, overlap, spec errors,
run keys. Rows are written to temp files here; no Ray, no models."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from w2sray import cli
from w2sray.data import make_splits
from w2sray.data.local import load_local_sources
from w2sray.model_dir import apply_model_dir
from w2sray.runs import plan_sweep
from w2sray.spec import SpecError, load_spec, parse_spec


def write_tsv(path, header: tuple[str, str], rows: list[tuple[int, str]]) -> str:
    lines = ["\t".join(header)] + [f"{y}\t{t}" for y, t in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture()
def files(tmp_path, monkeypatch):
    """train.tsv: 60 rows (label, sentence), two of them also test texts; dev.tsv: 10 and
    test.jsonl: 6 test rows with their own column names."""
    monkeypatch.setenv("W2SRAY_CACHE_DIR", str(tmp_path / "cache"))
    train = [(i % 2, f"train sentence {i}") for i in range(58)]
    train += [(1, "  shared one "), (0, "shared two")]  # also test texts (compared stripped)
    dev = [(i % 2, f"dev sentence {i}") for i in range(9)] + [(1, "shared one")]
    test = [{"y": i % 2, "txt": f"test sentence {i}"} for i in range(5)]
    test.append({"y": 0, "txt": "shared two"})
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    return {
        "train": write_tsv(tmp_path / "train.tsv", ("label", "sentence"), train),
        "dev": write_tsv(tmp_path / "dev.tsv", ("label", "content"), dev),
        "test": str(tmp_path / "test.jsonl"),
        "dir": tmp_path,
    }


def params_for(files, **kw) -> dict:
    return {
        "path": files["train"],
        "text_column": "sentence",
        "test_path": files["dev"],
        "test_text_column": "content",
        **kw,
    }


def test_test_split_comes_from_test_files_and_overlap_is_dropped(files, caplog):
    params = params_for(files)
    with caplog.at_level(logging.WARNING, logger="w2sray.data.local"):
        s = make_splits("local", params, n_gt=20, n_weak=20, n_test=10, split_seed=0)
    assert "1 training row(s) dropped" in caplog.text  # "  shared one " is a dev text
    assert sorted(s.test_texts) == sorted([f"dev sentence {i}" for i in range(9)] + ["shared one"])
    train_texts = s.gt_texts + s.weak_texts
    assert all(t.startswith(("train sentence", "shared two")) for t in train_texts)
    assert len(set(train_texts)) == 40
    ids = [set(map(int, i)) for i in (s.gt_ids, s.weak_ids, s.test_ids)]
    assert [len(i) for i in ids] == [20, 20, 10]
    assert not ids[0] & ids[1] and not (ids[0] | ids[1]) & ids[2]
    assert min(ids[2]) == 40  # test ids count on from the training rows'
    again = make_splits("local", params, n_gt=20, n_weak=20, n_test=10, split_seed=0)
    assert (again.gt_texts, again.weak_texts, again.test_texts) == (
        s.gt_texts,
        s.weak_texts,
        s.test_texts,
    )
    other = make_splits("local", params, n_gt=20, n_weak=20, n_test=10, split_seed=1)
    assert other.gt_texts != s.gt_texts and sorted(other.test_texts) == sorted(s.test_texts)


def test_several_test_files_each_with_its_own_format(files):
    # Two test files: the list form. test.jsonl's columns differ from dev.tsv's, so it gets a
    # file of its own here; one set of test columns applies to every test file.
    jsonl = load_local_sources(
        40,
        6,
        0,
        path=files["train"],
        text_column="sentence",
        test_path=[files["test"]],
        test_text_column="txt",
        test_label_column="y",
    )
    assert jsonl.dropped == 1 and sorted(jsonl.test_labels) == [0, 0, 0, 0, 1, 1]
    assert "shared two" not in jsonl.train_texts and "shared two" in jsonl.test_texts
    both_dev = write_tsv(files["dir"] / "dev2.tsv", ("label", "content"), [(0, "shared two")])
    two = load_local_sources(
        100, 11, 0, **params_for(files, test_path=[files["dev"], both_dev], balance=False)
    )
    assert two.dropped == 2 and len(two.train_texts) == 58 and len(two.test_texts) == 11


def test_n_test_bounds_and_training_shortfall(files):
    s = make_splits("local", params_for(files), n_gt=5, n_weak=5, n_test=4, split_seed=0)
    assert len(s.test_texts) == 4  # a seeded sample of the 10 test rows
    with pytest.raises(ValueError, match=r"has 10 rows, n_test is 11: set n_test to at most 10"):
        make_splits("local", params_for(files), n_gt=5, n_weak=5, n_test=11, split_seed=0)
    # 59 training rows are left after the overlap: balanced, 29 per class = 58 rows.
    with pytest.raises(ValueError, match=r"has 58 training examples \(after dropping 1 also in"):
        make_splits("local", params_for(files), n_gt=30, n_weak=30, n_test=10, split_seed=0)


def spec_with(params: dict, storage: str = "/tmp/unused") -> dict:
    return {
        "name": "unit",
        "storage": storage,
        "datasets": [{"name": "local", "params": params, "n_gt": 20, "n_weak": 20, "n_test": 10}],
        "models": ["w2s-tiny-1", "w2s-tiny-2"],
        "methods": ["xent"],
    }


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(SpecError) as exc:
        parse_spec(raw, "s.yaml")
    return [p.split(": ", 1)[1] for p in exc.value.problems if p.startswith("datasets[0].params:")]


def test_spec_errors_name_the_file_and_field(files, tmp_path, capsys):
    missing = str(tmp_path / "none.tsv")
    assert problems_of(spec_with(params_for(files, test_path=[files["dev"], missing]))) == [
        f"test_path[1] {missing!r} is not a file"
    ]
    assert problems_of(spec_with(params_for(files, test_text_column="sentence"))) == [
        f"{files['dev']}: column 'sentence' not found (columns: label, content)"
    ]
    assert problems_of(spec_with(params_for(files, test_path=[]))) == [
        "parameter 'test_path' must be a file or a non-empty list of files, got []"
    ]
    stray = {"path": files["train"], "text_column": "sentence", "test_text_column": "content"}
    assert problems_of(spec_with(stray)) == [
        "parameter 'test_text_column' applies only with 'test_path'"
    ]
    spec = tmp_path / "bad.yaml"
    spec.write_text(json.dumps(spec_with(params_for(files, test_path=missing))))
    assert cli.main(["plan", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"bad.yaml: datasets[0].params: test_path {missing!r} is not a file" in err


def test_run_keys_follow_test_files_bytes_not_place(files, tmp_path):
    def keys(params: dict) -> list[str]:
        return [r.key for r in plan_sweep(parse_spec(spec_with(params), "s.yaml")).all_runs()]

    base = keys(params_for(files))
    no_test = keys({"path": files["train"], "text_column": "sentence"})
    assert not set(base) & set(no_test)
    moved = str(shutil.copy(files["dev"], tmp_path / "moved.tsv"))
    assert keys(params_for(files, test_path=moved)) == base
    assert keys(params_for(files, test_path=[moved])) == base  # a one-file list: the same
    with open(moved, "a") as fh:
        fh.write("1\tone more\n")
    assert not set(keys(params_for(files, test_path=moved))) & set(base)
    run = plan_sweep(parse_spec(spec_with(params_for(files)), "s.yaml")).gt[0]
    assert len(run.dataset.test_sha256) == 1 and "test_path" not in run.content()["dataset"]


REPO = Path(__file__).resolve().parents[1]
SST2 = REPO.parent / "shared" / "data" / "sst2"


@pytest.mark.skipif(not SST2.is_dir(), reason=f"no shared data at {SST2}")
def test_sst2_encoders_spec(tmp_path, monkeypatch):
    """The shipped encoder sweep: hub ids, weakest first; A and B from train.tsv, test from the
    dev + test sentences (the one train sentence also in test.tsv dropped); a model directory
    maps every rung to a local folder."""
    monkeypatch.setenv("W2SRAY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(REPO)
    spec = load_spec(REPO / "sweeps" / "sst2_encoders.yaml")
    hub = [m.source for m in spec.models]
    assert hub == [
        "sentence-transformers/paraphrase-MiniLM-L3-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
        "sentence-transformers/all-mpnet-base-v2",
    ]
    (d,) = spec.datasets
    src = load_local_sources(d.n_gt + d.n_weak, 2693, d.split_seed, **d.params)
    assert src.dropped == 1 and len(src.test_texts) == 2693 and d.n_test <= 2693
    models = tmp_path / "models"
    for h in hub:
        (models / h.split("/")[1]).mkdir(parents=True)
        (models / h.split("/")[1] / "config.json").write_text("{}")
    new, report = apply_model_dir(spec, str(models))
    assert [m.name for m in new.models] == [m.name for m in spec.models]
    assert [r.folder for r in report] == [str(models / h.split("/")[1]) for h in hub]
