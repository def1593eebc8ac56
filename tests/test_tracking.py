"""Experiment tracking (spec ``tracking:``, w2sray/tracking.py): the spec's checks, the Tune
callbacks a stage gets, and that tracking never changes a run's key. A sweep tracked in a real
MLflow store: tests/test_sweep_integration.py."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from w2sray.cli import main
from w2sray.runs import plan_sweep
from w2sray.spec import SpecError, parse_spec
from w2sray.tracking import tracking_callbacks

RAW = {
    "name": "tracked",
    "storage": "unused",
    "datasets": [{"name": "synthetic", "n_gt": 40, "n_weak": 40, "n_test": 40}],
    "models": ["w2s-tiny-1", "w2s-tiny-2"],
    "methods": ["xent"],
}
HAS_WANDB = importlib.util.find_spec("wandb") is not None


@pytest.mark.parametrize(
    "tracking, field, words",
    [
        ({"comet": {}}, "tracking.comet", "unknown tracker"),
        ({"mlflow": {"uri": "x"}}, "tracking.mlflow.uri", "unknown option"),
        ({"mlflow": {"save_artifact": "yes"}}, "tracking.mlflow.save_artifact", "must be bool"),
        ({"mlflow": True}, "tracking.mlflow", "mapping of options"),
        ({"wandb": {}}, "tracking.wandb.project", "required"),
        ({"wandb": {"project": "p", "mode": "loud"}}, "tracking.wandb.mode", "online"),
        ("mlflow", "tracking", "mapping of tracker"),
    ],
)
def test_bad_tracking_names_the_field(tracking, field, words):
    with pytest.raises(SpecError) as err:
        parse_spec({**RAW, "tracking": tracking})
    assert any(p.startswith(field) and words in p for p in err.value.problems), err.value.problems


@pytest.mark.skipif(HAS_WANDB, reason="checks the error when wandb is not installed")
def test_missing_tracker_package_exits_2_naming_the_extra(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**RAW, "tracking": {"wandb": {"project": "w2s"}}}))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tracking.wandb" in err and "pip install 'w2sray[wandb]'" in err


def test_stage_callbacks_carry_the_sweep_and_stage():
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    spec = parse_spec({**RAW, "tracking": {"mlflow": {"tags": {"team": "a"}}}})
    (cb,) = tracking_callbacks(spec.tracking, spec.name, "transfer")
    assert isinstance(cb, MLflowLoggerCallback)
    assert cb.experiment_name == "tracked"  # default: the sweep's name
    assert cb.tags == {"w2sray_sweep": "tracked", "w2sray_stage": "transfer", "team": "a"}
    assert tracking_callbacks({}, "tracked", "gt") == []


def test_tracking_never_changes_a_run_key():
    plain = [r.key for r in plan_sweep(parse_spec(RAW)).all_runs()]
    tracked = parse_spec({**RAW, "tracking": {"mlflow": {"experiment_name": "e"}}})
    assert [r.key for r in plan_sweep(tracked).all_runs()] == plain
