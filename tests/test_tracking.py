"""Experiment tracking (spec ``tracking:``, w2sray/tracking.py): the spec's checks, the Tune
callbacks a stage gets, and that tracking never changes a run's key. A sweep tracked in a real
MLflow store and in W&B offline runs: tests/test_sweep_integration.py."""

from __future__ import annotations

import pytest
import yaml

from w2sray import tracking
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
        ({"tensorboard": {"logdir": "x"}}, "tracking.tensorboard.logdir", "unknown option"),
    ],
)
def test_bad_tracking_names_the_field(tracking, field, words):
    with pytest.raises(SpecError) as err:
        parse_spec({**RAW, "tracking": tracking})
    assert any(p.startswith(field) and words in p for p in err.value.problems), err.value.problems


def test_missing_tracker_package_exits_2_naming_the_extra(tmp_path, capsys, monkeypatch):
    # wandb is installed (the dev extra): the check looks for a package that is not
    monkeypatch.setitem(tracking.PACKAGES, "wandb", "w2sray_no_such_package")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**RAW, "tracking": {"wandb": {"project": "w2s"}}}))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tracking.wandb" in err and "pip install 'w2sray[wandb]'" in err


def test_tensorboard_is_tunes_own_logger_and_adds_no_callback():
    spec = parse_spec({**RAW, "tracking": {"tensorboard": {}}})
    assert tracking_callbacks(spec.tracking, spec.name, "gt") == []


def test_stage_callbacks_carry_the_sweep_and_stage():
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    spec = parse_spec({**RAW, "tracking": {"mlflow": {"tags": {"team": "a"}}}})
    (cb,) = tracking_callbacks(spec.tracking, spec.name, "transfer")
    assert isinstance(cb, MLflowLoggerCallback)
    assert cb.experiment_name == "tracked"  # default: the sweep's name
    assert cb.tags == {"w2sray_sweep": "tracked", "w2sray_stage": "transfer", "team": "a"}
    assert tracking_callbacks({}, "tracked", "gt") == []


def test_offline_wandb_needs_no_api_key_and_passes_the_env_on(monkeypatch, tmp_path):
    """Ray's callback asks for an API key unless WANDB_MODE is offline; the spec's mode is
    enough. The driver's WANDB_* reach each trial's logging actor with wandb.init's arguments."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    tracked = {"wandb": {"project": "w2s", "mode": "offline", "tags": ["a"]}}
    spec = parse_spec({**RAW, "tracking": tracked})
    (cb,) = tracking_callbacks(spec.tracking, spec.name, "gt")
    assert isinstance(cb, WandbLoggerCallback)
    assert (cb.project, cb.group, cb.kwargs["tags"]) == ("w2s", "tracked", ["a", "stage:gt"])
    cb.setup()
    assert cb.kwargs["mode"] == "offline" and cb.kwargs["w2sray_env"]["WANDB_DIR"] == str(tmp_path)


def test_tracking_never_changes_a_run_key():
    plain = [r.key for r in plan_sweep(parse_spec(RAW)).all_runs()]
    tracked = parse_spec({**RAW, "tracking": {"mlflow": {"experiment_name": "e"}}})
    assert [r.key for r in plan_sweep(tracked).all_runs()] == plain
