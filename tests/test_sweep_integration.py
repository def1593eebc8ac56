"""Failures on a real local Ray cluster: a run that raises is recorded, the others finish, a
rerun redoes exactly the failed and a corrupted run. (The full happy path, every method, ZeRO-2/3
and the report: tests/test_methods_integration.py.)"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import time
from pathlib import Path

import pytest
import yaml

from w2sray.cli import main
from w2sray.runs import plan_sweep
from w2sray.spec import load_spec
from w2sray.store import Store
from w2sray.sweep import execute

SPEC = {
    "name": "itest",
    "datasets": [{"name": "synthetic", "n_gt": 256, "n_weak": 256, "n_test": 200}],
    "models": [
        {"name": "weak", "source": "w2s-tiny-1", "resources": {"zero_stage": 2}},
        {"name": "strong", "source": "w2s-tiny-2", "resources": {"workers": 2, "zero_stage": 3}},
    ],
    "methods": [
        {"name": "xent", "loss": "xent"},
        {"name": "logconf", "loss": "logconf", "params": {"alpha_max": [0.5, 1.0]}},
    ],
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 24},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}


def test_failing_run_is_recorded_and_others_finish(ray_cluster, tmp_path, capsys, monkeypatch):
    """A weak model that cannot load: its GT run fails with its error recorded, the strong
    model's GT run still completes, the transfer that needed the weak labels is marked failed
    without launching, and the report lists both failures, each with its exception's line.
    (A search blocked the same way: tests/test_methods.py, through the same execute().)
    The sweep is tracked in MLflow (a local file store) and in W&B (offline): a tracked run per
    trial in each, with the run key, the stage and the run's metrics."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt2", "n_layer": 1}')  # no weights
    raw = {
        **SPEC,
        "name": "failing",
        "storage": str(tmp_path / "store"),
        "models": [
            {"name": "broken", "source": str(broken)},
            {"name": "strong", "source": "w2s-tiny-1"},
        ],
        "methods": ["xent"],
        "tracking": {
            "mlflow": {"tracking_uri": f"file://{tmp_path / 'mlruns'}"},
            "wandb": {"project": "w2s-itest", "mode": "offline"},
            "tensorboard": {},
        },
        # a trial per run, so a tracked run per run (a pack is one trial: tests/test_packing.py)
        "packing": {"max_runs": 1},
    }
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 prefers a database
    # W&B writes under tmp_path, not ~: the driver's WANDB_* reach Tune's logging actors
    # (w2sray/tracking.py), though the session cluster started before these were set
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB__DISABLE_STATS", "WANDB__DISABLE_MACHINE_INFO", "WANDB_DISABLE_GIT"):
        monkeypatch.setenv(var, "true")  # less work per tracked trial on a busy machine
    monkeypatch.setenv("WANDB__SAVE_REQUIREMENTS", "false")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_path)
    plan = plan_sweep(spec)
    outcome = execute(spec, plan, Store(spec.storage), printer=lambda s: None)
    store = Store(spec.storage)
    strong_gt = next(r for r in plan.gt if r.model.name == "strong")
    broken_gt = next(r for r in plan.gt if r.model.name == "broken")
    transfer = plan.transfer[0]
    assert outcome.done == [strong_gt.key] and store.is_complete(strong_gt.key)
    m = store.read_json(strong_gt.key, "metrics.json")
    # one fp32 CPU worker: its engine trains without ZeRO (zero.engine_stage), the spec's stage
    # is recorded as such; the worker used its 1 CPU's thread; no identity all-reduce of every
    # gradient (train_loop_per_worker)
    assert (m["zero_stage"], m["engine_zero_stage"], m["torch_threads"]) == (1, 0, 1)
    assert m["engine_allreduce"] is False
    assert m["gpu"] is False and m["gpu_memory_fraction"] is None  # no GPU share to cap
    assert m["train_cpu_seconds"] > 0 and isinstance(m["worker_nice"], int)
    assert set(outcome.failed) == {broken_gt.key, transfer.key}
    assert not store.is_complete(broken_gt.key)
    failures = {f["key"]: f for f in store.failures()}
    assert "broken-model" in failures[broken_gt.key]["error"]
    assert "upstream" in failures[transfer.key]["error"]

    # TensorBoard: one event file per trial; the finished one's holds the run's test accuracy
    scalars = _tensorboard_scalars_of_trials(tmp_path / "store" / "ray" / "failing-gt")
    assert [s["ray/tune/acc"] for s in scalars if "ray/tune/acc" in s] == [
        pytest.approx(m["acc"], abs=1e-6)
    ]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"file://{tmp_path / 'mlruns'}")
    experiment = client.get_experiment_by_name("failing")  # default: the sweep's name
    tracked = {r.data.params["runs"]: r for r in client.search_runs([experiment.experiment_id])}
    # the trial's config, {"runs": [key]}; the transfer never launched
    assert set(tracked) == {str([broken_gt.key]), str([strong_gt.key])}
    ok = tracked[str([strong_gt.key])]
    assert ok.data.tags["w2sray_stage"] == "gt" and ok.info.status == "FINISHED"
    assert ok.data.metrics["acc"] == m["acc"]
    assert tracked[str([broken_gt.key])].info.status == "FAILED"
    # W&B, offline without an API key: an offline run per trial, with its config and metrics
    # W&B's own service process writes the log behind the sweep: under load the last records
    # (the summary) can land after execute returns, so read until they are there (30 s at most)
    deadline = time.time() + 30
    while True:
        runs = _wandb_offline_runs(tmp_path / "wandb_dir" / "wandb")
        wb = {str(r["config"]["runs"]): r for r in runs}
        done = str([strong_gt.key]) in wb and "acc" in wb[str([strong_gt.key])]["summary"]
        if done or time.time() > deadline:
            break
        time.sleep(1)
    assert len(runs) == 2 and set(wb) == set(tracked)
    ok = wb[str([strong_gt.key])]
    assert (ok["project"], ok["group"], ok["tags"]) == ("w2s-itest", "failing", ["stage:gt"])
    assert ok["summary"]["acc"] == m["acc"]
    assert "acc" not in wb[str([broken_gt.key])]["summary"]

    assert main(["report", spec.storage]) == 0
    with open(os.path.join(spec.storage, "report", "summary.md")) as fh:
        summary = fh.read()
    assert broken_gt.key in summary and transfer.key in summary
    # the line shown is the exception's, not a traceback's first line
    assert "OSError" in summary and "Traceback (most recent call last)" not in summary

    # Repair the model and corrupt the finished run's metrics: a rerun redoes exactly the
    # failed runs and the corrupted one, and leaves no failure behind.
    from w2sray.data.tokenizer import build_synthetic_tokenizer
    from w2sray.models import load_model

    load_model("w2s-tiny-1", seed=0).backbone.save_pretrained(broken)
    build_synthetic_tokenizer().save_pretrained(broken)
    metrics = os.path.join(spec.storage, "runs", strong_gt.key, "metrics.json")
    with open(metrics, "r+") as fh:
        fh.truncate(10)
    assert not store.is_complete(strong_gt.key)
    # (the rerun without W&B: each tracked trial starts two more Ray workers, for its result
    # queue and its logging actor, and this suite runs on 2 cores)
    again = execute(
        dataclasses.replace(spec, tracking={"mlflow": spec.tracking["mlflow"]}),
        plan,
        Store(spec.storage),
        printer=lambda s: None,
    )
    assert sorted(again.done) == sorted([broken_gt.key, strong_gt.key, transfer.key])
    assert again.failed == {} and again.skipped == []
    assert all(store.is_complete(r.key) for r in plan.all_runs())
    assert store.failures() == []


def _wandb_offline_runs(root) -> list[dict]:
    """The offline runs W&B wrote under ``root`` (WANDB_DIR/wandb), read from each run's
    transaction log (run-<id>.wandb: W&B's header, then leveldb-log framed Record protobufs;
    wandb 0.31 writes no config.yaml or wandb-summary.json offline, nor ships a reader):
    project, group, tags, and the config and summary as the updates leave them."""
    import struct

    from wandb.proto.wandb_internal_pb2 import Record

    block, header = 32768, 7
    runs = []
    for path in sorted(root.glob("offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        assert struct.unpack("<4sHB", data[:header]) == (b":W&B", 0xBEE1, 0)
        run = {"config": {}, "summary": {}}
        pos, payload = header, b""
        while pos + header <= len(data):
            if block - pos % block < header:  # a block's tail too short for a record header
                pos += block - pos % block
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + header])
            payload += data[pos + header : pos + header + length]
            pos += header + length
            if kind not in (1, 4):  # FULL or LAST ends a record; FIRST and MIDDLE continue it
                continue
            record, payload = Record.FromString(payload), b""
            which = record.WhichOneof("record_type")
            if which == "run":
                r = record.run
                run.update(project=r.project, group=r.run_group, tags=list(r.tags))
                updates = [("config", u) for u in r.config.update]
            elif which in ("config", "summary"):
                updates = [(which, u) for u in getattr(record, which).update]
            else:
                updates = []
            for part, u in updates:
                run[part][u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
        runs.append(run)
    return runs


def _tensorboard_scalars_of_trials(experiment: Path) -> list[dict[str, float]]:
    """The last value of every scalar in each trial's TensorBoard event file (TFRecord framing:
    length, crc, an Event protobuf, crc), read with tensorboardX's own Event type."""
    import struct

    from tensorboardX.proto import event_pb2

    out = []
    for path in sorted(glob.glob(str(experiment / "*" / "events.out.tfevents.*"))):
        data, i, values = Path(path).read_bytes(), 0, {}
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            values.update({v.tag: v.simple_value for v in event.summary.value})
        out.append(values)
    return out
