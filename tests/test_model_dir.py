"""``--model-dir`` / ``W2SRAY_MODEL_DIR``: hub ids mapped to local copies before planning.
Folders here hold only a config.json; no model is loaded, no Ray."""

from __future__ import annotations

import json
import os

import pytest

from w2sray import cli
from w2sray.model_dir import apply_model_dir, local_copy
from w2sray.runs import plan_sweep
from w2sray.spec import parse_spec


@pytest.fixture(autouse=True)
def _digest_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("W2SRAY_CACHE_DIR", str(tmp_path / "cache"))  # planning hashes folders


def folder(path) -> str:
    os.makedirs(path, exist_ok=True)
    (path / "config.json").write_text('{"model_type": "gpt2"}')
    return str(path)


def test_local_copy_mapping(tmp_path):
    d = tmp_path / "models"
    flat = folder(d / "all-MiniLM-L6-v2")
    nested = folder(d / "org" / "both")
    folder(d / "both")
    os.makedirs(d / "noconfig")
    assert local_copy("sentence-transformers/all-MiniLM-L6-v2", str(d)) == flat  # DIR/name
    assert local_copy("org/both", str(d)) == nested  # DIR/org/name comes first
    assert local_copy("both", str(d)) == str(d / "both")  # an id without org
    assert local_copy("org/noconfig", str(d)) is None  # a folder without config.json
    assert local_copy("org/absent", str(d)) is None
    assert local_copy("w2s-tiny-1", str(d)) is None  # built-ins and local paths stay
    assert local_copy(flat, str(d)) is None


def raw_spec(storage: str) -> dict:
    return {
        "name": "unit",
        "storage": storage,
        "datasets": [{"name": "synthetic", "n_gt": 20, "n_weak": 20, "n_test": 10}],
        "models": [
            "w2s-tiny-1",
            {"name": "small", "source": "openai-community/gpt2", "revision": "abc"},
            {"name": "absent", "source": "org/not-here"},
        ],
        "methods": ["xent"],
    }


def test_apply_model_dir_is_a_spec_naming_the_folder(tmp_path):
    d = tmp_path / "models"
    copy = folder(d / "gpt2")
    spec = parse_spec(raw_spec(str(tmp_path / "store")), "s.yaml")
    new, report = apply_model_dir(spec, str(d))
    tiny, small, absent = new.models
    assert tiny == spec.models[0] and absent == spec.models[2]
    # The name stays; source is the folder; the folder has no revision; the hub id's
    # defaults-table settings (gpt2: lr 5e-5, batch 32) are kept as the model's own.
    assert (small.name, small.source, small.revision) == ("small", copy, None)
    assert new.train_for(small) == spec.train_for(spec.models[1])
    assert small.train["lr"] == 5e-5
    assert [(r.name, r.folder, r.dropped_revision) for r in report] == [
        ("small", copy, "abc"),
        ("absent", None, None),
    ]
    # Exactly a spec that names the folder: the same run keys.
    named = raw_spec(str(tmp_path / "store"))
    named["models"][1] = {"name": "small", "source": copy, "train": dict(small.train)}
    direct = plan_sweep(parse_spec(named, "s.yaml"))
    assert [r.key for r in plan_sweep(new).all_runs()] == [r.key for r in direct.all_runs()]
    with pytest.raises(ValueError, match="does not exist"):
        apply_model_dir(spec, str(tmp_path / "nowhere"))


def test_plan_prints_what_resolved(tmp_path, monkeypatch, capsys):
    d = tmp_path / "models"
    copy = folder(d / "gpt2")
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(raw_spec(str(tmp_path / "store"))))
    assert cli.main(["plan", str(path), "--model-dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert f"model directory {d} (--model-dir):" in out
    assert f"  small: openai-community/gpt2 -> local {copy} (revision abc not checked)" in out
    assert f"  absent: org/not-here -> hub (no local copy in {d})" in out
    monkeypatch.setenv("W2SRAY_MODEL_DIR", str(d))
    assert cli.main(["plan", str(path)]) == 0
    assert f"model directory {d} (W2SRAY_MODEL_DIR):" in capsys.readouterr().out
    assert cli.main(["plan", str(path), "--model-dir", str(tmp_path / "nowhere")]) == 2
    assert "--model-dir: model directory" in capsys.readouterr().err
