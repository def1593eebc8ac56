"""Which Ray Train entry point trains a run: one table, by the run's kind.

Every worker-side phase a method adds (pretraining, and the ones to come) is one entry here;
``build_trainer`` (one run) and ``pack_loop_per_worker`` (a pack) both look runs up through
``entry_for``. Entries are import paths, so importing this module stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# kind -> "module:function"; a kind not listed trains with the fine-tuning loop.
ENTRY_POINTS: dict[str, str] = {
    "pretrain": "w2sray.train.pretrain:pretrain_loop_per_worker",
    "features": "w2sray.train.features:features_loop_per_worker",
}
DEFAULT_ENTRY = "w2sray.train.loop:train_loop_per_worker"
# A gt or transfer run with ``train.probe`` trains a head on its features run's stored arrays.
PROBE_ENTRY = "w2sray.train.probe:probe_loop_per_worker"


def entry_for(run: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """The entry point of ``run`` (a Run.to_config() dict): called with
    {"run": run, "store": uri} on every worker."""
    if run["train"].get("probe"):
        module, name = PROBE_ENTRY.split(":")
    else:
        module, name = ENTRY_POINTS.get(run["kind"], DEFAULT_ENTRY).split(":")
    return getattr(importlib.import_module(module), name)
