"""The per-model defaults table (w2sray/models/defaults.py) in a spec's training settings:
TrainSettings defaults < table < top-level ``train:`` < the model's ``train:``."""

from __future__ import annotations

import socket
from dataclasses import fields, replace
from pathlib import Path

import pytest
import yaml

from w2sray import cli
from w2sray.models.defaults import SPEC_TRAIN_FIELDS, model_defaults, spec_train_defaults
from w2sray.runs import plan_sweep
from w2sray.spec import Resources, TrainSettings, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]


def _raw(models, train=None, resources=None) -> dict:
    raw = {
        "name": "merge",
        "storage": "/tmp/w2s-merge-unused",
        "datasets": [{"name": "synthetic", "n_gt": 100, "n_weak": 100, "n_test": 100}],
        "models": models,
        "methods": ["xent"],
    }
    if train is not None:
        raw["train"] = train
    if resources is not None:
        raw["resources"] = resources
    return raw


@pytest.fixture
def no_network(monkeypatch):
    """Parsing a spec with hub ids must not reach the network (it may check, not download)."""

    def refuse(*args, **kwargs):
        raise AssertionError("spec parsing tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_table_fields_are_train_settings():
    names = {f.name for f in fields(TrainSettings)}
    assert set(SPEC_TRAIN_FIELDS) <= names
    assert set(model_defaults("gpt2").train_overrides()) == set(SPEC_TRAIN_FIELDS)
    assert spec_train_defaults("org/not-in-table") == {}
    assert spec_train_defaults("/models/gpt2") == {}  # a local path is never the table's


def test_each_precedence_level(no_network):
    gpt2, xl = model_defaults("gpt2"), model_defaults("gpt2-xl")
    assert gpt2.lr != TrainSettings().lr and xl.gradient_checkpointing  # the levels differ
    spec = parse_spec(
        _raw(
            [
                "gpt2",
                "org/not-in-table",
                {"name": "xl", "source": "gpt2-xl"},
                {"name": "xl-own", "source": "gpt2-xl", "train": {"lr": 3.0e-6}},
            ]
        )
    )
    by = {m.name: spec.train_for(m) for m in spec.models}
    # 1. dataclass defaults: a model without a table entry, a field the table does not hold
    assert by["org/not-in-table"] == TrainSettings()
    assert by["gpt2"].eval_batch_size == TrainSettings().eval_batch_size
    # 2. the table, for what the spec does not write
    assert (by["gpt2"].lr, by["gpt2"].batch_size) == (gpt2.lr, gpt2.batch_size)
    assert by["gpt2"].gradient_checkpointing is False
    assert (by["xl"].lr, by["xl"].gradient_checkpointing) == (xl.lr, True)
    assert spec.table_train(spec.models[0]) == gpt2.train_overrides()
    # 4. the model's own train: beats the table (the rest still from the table)
    assert (by["xl-own"].lr, by["xl-own"].gradient_checkpointing) == (3.0e-6, True)
    assert spec.table_train(spec.models[3]) == {"batch_size": 32, "gradient_checkpointing": True}

    # 3. a written top-level value beats the table for every model...
    top = {"lr": 2.0e-4, "gradient_checkpointing": False, "batch_size": 16}
    spec = parse_spec(
        _raw(["gpt2", {"name": "xl", "source": "gpt2-xl", "train": {"lr": 3.0e-6}}], train=top)
    )
    a, b = (spec.train_for(m) for m in spec.models)
    assert (a.lr, a.gradient_checkpointing, a.batch_size) == (2.0e-4, False, 16)
    # ...and 4. the model's train: still beats the top level
    assert (b.lr, b.gradient_checkpointing, b.batch_size) == (3.0e-6, False, 16)
    assert spec.table_train(spec.models[0]) == {} and spec.train_written == frozenset(top)
    # even where the written value equals the dataclass default
    spec = parse_spec(_raw(["gpt2", "gpt2-xl"], train={"lr": 1.0e-3}))
    assert spec.train_for(spec.models[0]).lr == 1.0e-3 == TrainSettings().lr


def test_resources_are_not_the_tables(no_network):
    spec = parse_spec(
        _raw(
            ["gpt2", {"name": "xl", "source": "gpt2-xl", "resources": {"workers": 2}}],
            resources={"zero_stage": 2},
        )
    )
    a, b = (spec.resources_for(m) for m in spec.models)
    assert a == replace(Resources(), zero_stage=2)
    assert b == replace(Resources(), zero_stage=2, workers=2)


def test_local_directory_and_code_built_specs_skip_the_table(tmp_path, monkeypatch):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)  # "gpt2" now names a local folder, loaded as that folder
    spec = parse_spec(_raw(["gpt2", "gpt2-xl"]))
    assert spec.train_for(spec.models[0]) == TrainSettings()
    assert spec.train_for(spec.models[1]).gradient_checkpointing is True
    # A SweepSpec built in code (train_written None) means exactly its train: no table.
    coded = replace(spec, train_written=None)
    assert [coded.train_for(m) for m in coded.models] == [TrainSettings()] * 2


def test_validation_sees_the_merged_settings(no_network):
    # the table's batch 32 does not split over 3 workers: named at the model, like any value
    with pytest.raises(Exception) as err:
        parse_spec(_raw(["gpt2", {"name": "b", "source": "gpt2-xl", "resources": {"workers": 3}}]))
    assert "models[1].resources.workers: batch_size 32 is not divisible by 3" in str(err.value)


def test_run_keys_follow_resolved_settings_only(no_network):
    implicit = parse_spec(_raw(["gpt2", "gpt2-xl"]))
    xl = model_defaults("gpt2-xl")
    written = parse_spec(
        _raw(
            [
                {"name": "gpt2", "train": model_defaults("gpt2").train_overrides()},
                {"name": "gpt2-xl", "train": xl.train_overrides()},
            ]
        )
    )
    keys = [r.key for r in plan_sweep(implicit).all_runs()]
    assert keys == [r.key for r in plan_sweep(written).all_runs()]
    off = parse_spec(_raw(["gpt2", "gpt2-xl"], train={"gradient_checkpointing": False}))
    off_keys = [r.key for r in plan_sweep(off).all_runs()]
    assert off_keys[0] == keys[0]  # gpt2: the table's value is false anyway
    assert off_keys[1] != keys[1]  # gpt2-xl: the written false beats the table's true


def written_model(written: dict, name: str) -> dict:
    (entry,) = [m for m in written["models"] if isinstance(m, dict) and m["name"] == name]
    return entry.get("train", {})


def test_quickstart_resolves_to_what_it_writes():
    path = ROOT / "sweeps" / "quickstart.yaml"
    spec = load_spec(path)
    written = yaml.safe_load(path.read_text())
    expect_t = replace(TrainSettings(), **written["train"])  # 3 == 3.0: floats compare equal
    expect_r = replace(Resources(), **written["resources"])
    for m in spec.models:
        # the sweep's train, with the model entry's own overrides (per-model epochs)
        assert spec.train_for(m) == replace(expect_t, **written_model(written, m.name)), m.name
        assert spec.resources_for(m) == expect_r, m.name
    # The table (built-ins covered) changes none of its runs' keys.
    without = replace(spec, train_written=None)
    assert [r.key for r in plan_sweep(spec).all_runs()] == [
        r.key for r in plan_sweep(without).all_runs()
    ]


def test_plan_marks_values_from_the_table(tmp_path, capsys, no_network):
    raw = _raw(["gpt2", {"name": "xl", "source": "gpt2-xl", "train": {"lr": 3.0e-6}}])
    raw["storage"] = str(tmp_path / "store")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "training settings taken from the defaults table" in out
    assert "  gpt2: lr=5e-05 batch_size=32 gradient_checkpointing=false" in out
    assert "  xl: batch_size=32 gradient_checkpointing=true" in out
