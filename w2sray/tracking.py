"""Experiment tracking through Ray Tune's own logger callbacks (spec ``tracking:``).

Every Tune trial (one run, or one search trial) becomes one tracked run with its config (the
run key) and the metrics it reports: MLflow (``MLflowLoggerCallback``) and Weights & Biases
(``WandbLoggerCallback``). TensorBoard needs nothing: Tune writes event files into every
trial's folder under ``<store>/ray/`` (``tensorboard --logdir <store>/ray``).

Tracking never changes a run's key: it is how results are watched, not what they are.
"""

from __future__ import annotations

import importlib.util
from typing import Any

# tracker -> {option: (type names accepted, description)}; the extra that installs it
OPTIONS: dict[str, dict[str, tuple[tuple[type, ...], str]]] = {
    "mlflow": {
        "tracking_uri": ((str,), "server or store URI; default: MLFLOW_TRACKING_URI or ./mlruns"),
        "experiment_name": ((str,), "default: the sweep's name"),
        "tags": ((dict,), "added to every run (with w2sray_sweep and w2sray_stage)"),
        "save_artifact": ((bool,), "upload each trial's folder as artifacts"),
    },
    "wandb": {
        "project": ((str,), "required"),
        "entity": ((str,), "team or user"),
        "group": ((str,), "default: the sweep's name"),
        "tags": ((list,), "added to every run"),
        "mode": ((str,), "online | offline | disabled"),
    },
}
PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}


def check_tracking(raw: Any, where: str = "tracking") -> list[str]:
    """Problems (``field: message``) with a spec's ``tracking:`` mapping, including a tracker
    whose package is not installed (nothing is launched that would fail at the first result)."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        return [f"{where}: must be a mapping of tracker -> options ({', '.join(OPTIONS)})"]
    problems = []
    for name, opts in raw.items():
        at = f"{where}.{name}"
        if name not in OPTIONS:
            problems.append(f"{at}: unknown tracker (known: {', '.join(OPTIONS)})")
            continue
        if not isinstance(opts, dict):
            problems.append(f"{at}: must be a mapping of options ({', '.join(OPTIONS[name])})")
            continue
        for key, value in opts.items():
            if key not in OPTIONS[name]:
                known = ", ".join(OPTIONS[name])
                problems.append(f"{at}.{key}: unknown option (known: {known})")
            elif not isinstance(value, OPTIONS[name][key][0]):
                kinds = "/".join(t.__name__ for t in OPTIONS[name][key][0])
                problems.append(f"{at}.{key}: must be {kinds}, got {value!r}")
        if name == "wandb":
            if "project" not in opts:
                problems.append(f"{at}.project: required")
            if opts.get("mode", "online") not in ("online", "offline", "disabled"):
                problems.append(f"{at}.mode: must be online, offline or disabled")
        if importlib.util.find_spec(PACKAGES[name]) is None:
            problems.append(
                f"{at}: needs the {PACKAGES[name]} package: pip install 'w2sray[{name}]'"
            )
    return problems


def tracking_callbacks(tracking: dict[str, Any], sweep: str, stage: str) -> list[Any]:
    """The Tune callbacks of a stage for a checked ``tracking:`` mapping."""
    callbacks: list[Any] = []
    mlflow = tracking.get("mlflow")
    if mlflow is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=mlflow.get("tracking_uri"),
                experiment_name=mlflow.get("experiment_name") or sweep,
                tags={"w2sray_sweep": sweep, "w2sray_stage": stage, **mlflow.get("tags", {})},
                save_artifact=mlflow.get("save_artifact", False),
            )
        )
    wandb = tracking.get("wandb")
    if wandb is not None:
        from ray.air.integrations.wandb import WandbLoggerCallback

        extra = {k: wandb[k] for k in ("entity", "mode") if k in wandb}
        callbacks.append(
            WandbLoggerCallback(
                project=wandb["project"],
                group=wandb.get("group") or sweep,
                tags=[*wandb.get("tags", []), f"stage:{stage}"],
                **extra,
            )
        )
    return callbacks
