"""Experiment tracking through Ray Tune's own logger callbacks (spec ``tracking:``).

Every Tune trial (one run, or one search trial) becomes one tracked run with its config (the
run key) and the metrics it reports: MLflow (``MLflowLoggerCallback``) and Weights & Biases
(``WandbLoggerCallback``). TensorBoard is Tune's own default logger: every trial's folder under
``<store>/ray/`` gets an event file (``tensorboard --logdir <store>/ray``) whether or not the spec
names it; ``tensorboard: {}`` only checks that its writer (tensorboardX) is installed.

Tracking never changes a run's key: it is how results are watched, not what they are.
"""

from __future__ import annotations

import functools
import importlib.util
import os
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
    "tensorboard": {},  # no options: Tune writes the event files into each trial's folder
}
PACKAGES = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboardX"}


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
        extra = {k: wandb[k] for k in ("entity", "mode") if k in wandb}
        callbacks.append(
            _wandb_callback_class()(
                project=wandb["project"],
                group=wandb.get("group") or sweep,
                tags=[*wandb.get("tags", []), f"stage:{stage}"],
                **extra,
            )
        )
    return callbacks


@functools.cache
def _wandb_callback_class() -> type:
    """Tune's WandbLoggerCallback, with two fixes (imported only when a spec tracks in W&B):

    - ``mode: offline`` / ``disabled`` needs no API key. Ray's callback asks for one unless the
      driver's WANDB_MODE says offline, so an offline sweep without ``wandb login`` would fail
      at its first stage.
    - The driver's ``WANDB_*`` variables (WANDB_DIR, WANDB_BASE_URL, WANDB_API_KEY, ...) reach
      the logging actors: they run in Ray worker processes, whose environment is the cluster's,
      not the driver's (Ray forwards WANDB_API_KEY only).
    """
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    class LoggingActor(_WandbLoggingActor):
        def __init__(self, *args: Any, w2sray_env: dict | None = None, **kwargs: Any) -> None:
            os.environ.update(w2sray_env or {})  # its own worker process (an actor per trial)
            super().__init__(*args, **kwargs)

    class Callback(WandbLoggerCallback):
        _logger_actor_cls = LoggingActor

        def setup(self, *args: Any, **kwargs: Any) -> None:
            if self.kwargs.get("mode") not in ("offline", "disabled"):
                super().setup(*args, **kwargs)  # finds the API key; project and group are set
            # passed on to each trial's LoggingActor with wandb.init's arguments
            env = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
            self.kwargs["w2sray_env"] = env

    return Callback
