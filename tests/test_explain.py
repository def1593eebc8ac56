"""`w2sray plan SPEC --explain KEY` (w2sray/explain.py): what a run's key hashes and, when it
is not stored, which settings differ from the closest stored run of its kind. The store is
real (runs written as a worker writes them: config.json with its content, metrics, DONE)."""

from __future__ import annotations

import copy

import yaml

from w2sray import cli
from w2sray.artifacts import record_files
from w2sray.explain import differences, flatten
from w2sray.runs import plan_sweep
from w2sray.spec import parse_spec
from w2sray.store import Store


def _raw(store: str, lr: float = 1e-3, warmup: float = 0.2) -> dict:
    return {
        "name": "explain",
        "storage": store,
        "datasets": [{"name": "synthetic", "n_gt": 32, "n_weak": 32, "n_test": 16}],
        "models": ["w2s-tiny-1", "w2s-tiny-2"],
        "methods": [
            {"name": "aux", "loss": "logconf", "params": {"alpha_max": 0.5, "warmup_frac": warmup}}
        ],
        "seeds": [0, 1],
        "train": {"epochs": 1, "lr": lr},
    }


def _store_plan(raw: dict) -> Store:
    """Write every run of ``raw``'s plan into its store as finished (no training)."""
    store = Store(raw["storage"])
    for run in plan_sweep(parse_spec(copy.deepcopy(raw))).all_runs():
        store.write_run(run.key, record_files(run.to_config(), {"acc": 0.5}))
    return store


def _spec_file(tmp_path, raw: dict) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_flatten_and_differences():
    a = {"train": {"lr": 1, "select": {"every": 5}}, "seed": 0, "upstream": ["k"]}
    b = {"train": {"lr": 2, "select": {"every": 5}}, "seed": 0, "upstream": ["j"], "x": 1}
    assert flatten(a) == {"train.lr": 1, "train.select.every": 5, "seed": 0, "upstream": ["k"]}
    assert differences(a, b) == [
        ("train.lr", 1, 2),
        ("upstream", ["k"], ["j"]),
        ("x", "(absent)", 1),
    ]


def test_explain_names_the_setting_that_makes_a_run_retrain(tmp_path, capsys):
    raw = _raw(str(tmp_path / "store"))
    _store_plan(raw)
    changed = _raw(raw["storage"], warmup=0.3)  # the loss param: transfers retrain, GT do not
    spec = _spec_file(tmp_path, changed)
    plan = plan_sweep(parse_spec(copy.deepcopy(changed)))
    transfer = next(r for r in plan.transfer if r.seed == 1)
    gt = plan.gt[0]

    assert cli.main(["plan", spec, "--explain", transfer.key]) == 0
    out = capsys.readouterr().out
    assert f"run {transfer.key} (transfer" in out and "status: not in the store" in out
    tail = out.split("closest stored transfer run: ")[1].splitlines()
    assert tail[0].endswith("1 setting(s) differ:")
    assert tail[1] == "  loss_params.warmup_frac: stored 0.2 -> planned 0.3"
    stored_key = tail[0].split(",")[0]
    assert Store(raw["storage"]).read_json(stored_key, "config.json")["seed"] == 1

    assert cli.main(["plan", spec, "--explain", gt.key]) == 0
    out = capsys.readouterr().out
    assert '"kind": "gt"' in out and "status: done" in out and "closest" not in out


def test_explain_without_a_comparable_run_or_a_known_key(tmp_path, capsys):
    raw = _raw(str(tmp_path / "empty"), lr=2e-3)
    spec = _spec_file(tmp_path, raw)
    key = plan_sweep(parse_spec(copy.deepcopy(raw))).gt[0].key
    assert cli.main(["plan", spec, "--explain", key]) == 0
    assert "no complete gt run in the store to compare with" in capsys.readouterr().out
    assert cli.main(["plan", spec, "--explain", "nope-"]) == 2
    err = capsys.readouterr().err
    assert spec in err and "no run of this plan has a key starting with 'nope-'" in err
