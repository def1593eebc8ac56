"""The names of what a run stores in its folder (``runs/<key>/``), defined once.

Workers write these files, the sweep and the analysis read them; tests name them through here.
"""

from __future__ import annotations

import json
from typing import Any

CONFIG = "config.json"  # the run's resolved settings (Run.to_config())
METRICS = "metrics.json"  # what it measured and how it ran
TEST_PREDICTIONS = "test_predictions.parquet"  # id, label, p1 on the test split
WEAK_LABELS = "weak_labels.parquet"  # id, p1 on split B: the labels a transfer trains on
VAL_PREDICTIONS = "val_predictions.parquet"  # a search trial's: weak, label, p1 on its val part
ADAPTER = "adapter.pt"  # a LoRA run's trained parameters (adapters and head, by name)
MODEL_DIR = "model"  # a pretraining run's model folder (save_pretrained), loaded by its users
# a features run's pooled backbone features of splits A, B and test, with their ids and labels
# (w2sray/train/features.py), read by every probe run of its model and dataset
FEATURES = "features.npz"
# in metrics.json: {python, package: version} the run was trained with (w2sray/provenance.py)
SOFTWARE = "software"


def record_files(
    run: dict[str, Any], metrics: dict[str, Any], sort_metrics: bool = True
) -> dict[str, bytes]:
    """config.json and metrics.json of a run, as bytes for Store.write_run. metrics.json also
    records the software the run was trained with (w2sray/provenance.py: not in the key)."""
    from w2sray.provenance import software

    metrics = {**metrics, SOFTWARE: software()}
    return {
        CONFIG: json.dumps(run, indent=2, sort_keys=True, default=str).encode(),
        METRICS: json.dumps(metrics, indent=2, sort_keys=sort_metrics).encode(),
    }
