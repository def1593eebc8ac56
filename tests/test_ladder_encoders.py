"""Opt-in: the real pretrained encoder ladder (sweeps/sst2_encoders.yaml) trained end to end
through `w2sray run --model-dir`, on SST-2 with its separate test source. Needs the models built
by ../shared/ladder/build.sh and the shared data, so CI skips it:

    .venv/bin/pip install onnx
    PY=$PWD/.venv/bin/python bash ../shared/ladder/build.sh /tmp/ladder
    W2SRAY_LADDER_DIR=/tmp/ladder .venv/bin/python -m pytest -m ladder tests/test_ladder_encoders.py

A tiny version: the two MiniLM rungs, 64/64/64 rows, one epoch, xent (3 runs, a few minutes).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from w2sray.artifacts import TEST_PREDICTIONS
from w2sray.cli import main
from w2sray.store import Store

REPO = Path(__file__).resolve().parents[1]
LADDER = os.environ.get("W2SRAY_LADDER_DIR", "")

pytestmark = [
    pytest.mark.ladder,
    pytest.mark.skipif(not LADDER, reason="set W2SRAY_LADDER_DIR to a built encoder ladder"),
]


def test_minilm_ladder_on_sst2_from_local_copies(ray_cluster, tmp_path, monkeypatch, capsys):
    models = Path(LADDER) / "models" if (Path(LADDER) / "models").is_dir() else Path(LADDER)
    raw = yaml.safe_load((REPO / "sweeps" / "sst2_encoders.yaml").read_text())
    raw["storage"] = str(tmp_path / "store")
    raw["datasets"][0].update(n_gt=64, n_weak=64, n_test=64)
    raw["models"] = raw["models"][:2]  # MiniLM-L3 -> MiniLM-L6
    raw["methods"] = [m for m in raw["methods"] if m["name"] == "xent"]
    raw["train"]["epochs"] = 1
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(REPO)  # the spec's data paths are relative to the repository root

    assert main(["run", str(spec), "--model-dir", str(models), "--no-report"]) == 0
    out = capsys.readouterr().out
    for hub_id, name in [
        ("sentence-transformers/paraphrase-MiniLM-L3-v2", "paraphrase-MiniLM-L3-v2"),
        ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
    ]:
        assert f"{hub_id} -> local {Path(os.path.abspath(models)) / name}" in out
    assert "trained 3, already complete 0, failed 0" in out

    store = Store(raw["storage"])
    configs = [store.read_json(k, "config.json") for k in store.run_keys()]
    assert len(configs) == 3
    test_texts = set()
    for key, config in zip(store.run_keys(), configs, strict=True):
        assert store.is_complete(key)
        assert config["model"]["source"].startswith(str(Path(os.path.abspath(models))))
        assert len(config["dataset"]["test_sha256"]) == 2  # dev.tsv and test.tsv
        metrics = store.read_json(key, "metrics.json")
        assert metrics["n_test"] == 64 and 0.0 <= metrics["acc"] <= 1.0
        test_texts.add(tuple(store.read_parquet(key, TEST_PREDICTIONS)["id"]))
    assert len(test_texts) == 1  # every model scored on the same test rows
