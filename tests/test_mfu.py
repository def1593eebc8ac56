"""Tests for benchmarks/mfu.py (throughput and MFU from a store), benchmarks/sweep_efficiency.py
and the specs that benchmarks/gpu_check.sh writes. No GPU, no Ray: the store holds hand-written
metrics."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from w2sray.spec import parse_spec
from w2sray.store import Store

REPO = Path(__file__).resolve().parents[1]
GPU_CHECK = REPO / "benchmarks" / "gpu_check.sh"


def _load_mfu():
    spec = importlib.util.spec_from_file_location("mfu", REPO / "benchmarks" / "mfu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mfu = _load_mfu()


@pytest.mark.parametrize(
    "name,label",
    [
        # the names nvidia-smi prints for the GPUs in the table -> the entry that must match
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 SXM5 80GB", "H100 SXM"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("nvidia l4", "L4"),  # case-insensitive
        # look-alikes with other peaks: never guessed from a near match
        ("NVIDIA H100 PCIe", None),
        ("NVIDIA H200 NVL", None),
        ("NVIDIA L40S", None),  # not "L4"
        ("Tesla T4", None),
        (None, None),
    ],
)
def test_gpu_names_match_their_own_table_entry(monkeypatch, name, label):
    monkeypatch.delenv("PEAK_BF16_FLOPS", raising=False)
    got, source = mfu.peak_for(name)
    if label is None:
        assert got is None and "PEAK_BF16_FLOPS" in source  # says how to supply the peak
        return
    assert source == f"table: {label}"
    (want,) = [peak for _, lab, peak in mfu.PEAK_TABLE if lab == label]
    assert got == want


def test_mfu_of_a_run_at_the_peak_is_one():
    """MFU = 6 * params * tokens/s / (peak * gpus): a run doing exactly peak * gpus FLOP/s."""
    peak = mfu.peak_for("NVIDIA H100 80GB HBM3")[0]
    params, gpus = 1e9, 8
    tokens_per_second = peak * gpus / (6 * params)
    assert mfu.mfu(params, tokens_per_second, peak, gpus) == pytest.approx(1.0)


def test_peak_from_env(monkeypatch):
    monkeypatch.setenv("PEAK_BF16_FLOPS", "500e12")
    assert mfu.peak_for("Tesla T4") == (500e12, "PEAK_BF16_FLOPS")
    assert mfu.peak_for("NVIDIA H100 80GB HBM3")[0] == 500e12  # the environment wins


def _write(store: Store, key: str, model: str, kind: str, metrics: dict, res: dict) -> None:
    config = {
        "key": key,
        "kind": kind,
        "model": {"name": model, "source": model},
        "weak_model": "w2s-tiny-2" if kind == "transfer" else None,
        "resources": res,
    }
    files = {
        "config.json": json.dumps(config).encode(),
        "metrics.json": json.dumps(metrics).encode(),
    }
    store.write_run(key, files)


def test_mfu_report_from_store(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PEAK_BF16_FLOPS", raising=False)
    store = Store(str(tmp_path / "store"))
    gpu = "NVIDIA H100 80GB HBM3"
    base = {"dtype": "bf16", "gpu_name": gpu, "acc": 0.9}
    _write(
        store, "gt-aaa", "w2s-tiny-3", "gt",
        {**base, "params": 1_000_000, "tokens_per_second": 1e5, "workers": 1, "zero_stage": 2},
        {"workers": 1, "gpus_per_worker": 1.0, "zero_stage": 2},
    )  # fmt: skip
    _write(
        store, "transfer-bbb", "w2s-tiny-4", "transfer",
        {**base, "params": 2_000_000, "tokens_per_second": 3e5, "workers": 2, "zero_stage": 3},
        {"workers": 2, "gpus_per_worker": 1.0, "zero_stage": 3},
    )  # fmt: skip
    # An incomplete run (no DONE.json) is not reported.
    (tmp_path / "store" / "runs" / "gt-zzz").mkdir()
    (tmp_path / "store" / "runs" / "gt-zzz" / "metrics.json").write_text("{}")

    assert mfu.main([str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert f"GPU: {gpu}; peak bf16 989 TFLOP/s per GPU (table: H100 SXM)" in out
    assert len(out.splitlines()) == 6  # GPU, formula, table header and rule, 2 complete runs
    gt = next(ln for ln in out.splitlines() if ln.startswith("gt "))
    # 6 * 1e6 * 1e5 / (989e12 * 1 GPU) = 6.0667e-4
    assert "w2s-tiny-3" in gt and "1.00M" in gt and "100,000" in gt and "0.0607%" in gt
    w2s = next(ln for ln in out.splitlines() if ln.startswith("w2s from w2s-tiny-2"))
    # 6 * 2e6 * 3e5 / (989e12 * 2 GPUs) = 1.8200e-3
    assert "w2s-tiny-4" in w2s and "0.1820%" in w2s and "   3 " in w2s

    # Unknown GPU and no PEAK_BF16_FLOPS: throughput only, and how to get MFU.
    assert mfu.main([str(tmp_path / "store"), "--gpu-name", "Tesla T4"]) == 0
    out = capsys.readouterr().out
    assert "MFU not computed" in out and "PEAK_BF16_FLOPS" in out
    assert "100,000" in out and "%" not in out.split("\n", 2)[2]
    # An explicit peak.
    assert mfu.main([str(tmp_path / "store"), "--peak", "6e17"]) == 0
    assert "0.0001%" in capsys.readouterr().out  # 6e11 / 6e17


def test_mfu_empty_store(tmp_path, capsys):
    assert mfu.main([str(tmp_path / "nothing")]) == 1
    assert "no complete runs" in capsys.readouterr().err


def test_gpu_check_script_parses_and_writes_a_valid_spec(tmp_path):
    subprocess.run(["bash", "-n", str(GPU_CHECK)], check=True)
    for ngpu, workers in ((1, 1), (3, 2), (8, 8), (16, 8)):
        text = subprocess.run(
            ["bash", str(GPU_CHECK), "--print-spec", str(ngpu)],
            check=True,
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "GPU_CHECK_STORE": str(tmp_path / "s")},
        ).stdout
        spec = parse_spec(yaml.safe_load(text))
        assert spec.storage == str(tmp_path / "s")
        assert [m.name for m in spec.models] == ["w2s-tiny-2", "w2s-tiny-3", "w2s-tiny-4"]
        assert spec.datasets[0].name == "synthetic"
        assert spec.train.dtype == "bf16"
        stages = [spec.resources_for(m).zero_stage for m in spec.models]
        assert stages == [2, 2, 3]
        assert all(spec.resources_for(m).gpus_per_worker == 1 for m in spec.models)
        assert all(spec.resources_for(m).workers == workers for m in spec.models)


def test_gpu_check_fraction_spec_packs_one_gpu(tmp_path):
    """The fractions part's sweep, as gpu_check.sh writes it: the same runs with whole GPUs and
    with 0.25 of one, one at a time on one GPU against four."""
    from w2sray.runs import plan_sweep
    from w2sray.sweep import concurrency

    keys = {}
    for g, at_once in (("1", 1), ("0.25", 4)):
        text = subprocess.run(
            ["bash", str(GPU_CHECK), "--print-fraction-spec", g],
            check=True,
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "GPU_CHECK_STORE": str(tmp_path / "s")},
        ).stdout
        spec = parse_spec(yaml.safe_load(text))
        assert spec.train.dtype == "bf16"
        assert all(spec.resources_for(m).gpus_per_worker == float(g) for m in spec.models)
        assert all(spec.resources_for(m).workers == 1 for m in spec.models)
        plan = plan_sweep(spec)
        assert (len(plan.gt), len(plan.transfer)) == (6, 6)
        for runs in (plan.gt, plan.transfer):
            assert concurrency(list(runs), {"CPU": 16, "GPU": 1}, None) == at_once
        keys[g] = [r.key for r in plan.gt + plan.transfer]
    assert keys["1"] == keys["0.25"]  # the same runs: resources are not part of a run's key


def _load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


efficiency = _load_benchmark("sweep_efficiency")


def test_sweep_efficiency_from_store(tmp_path, capsys):
    store = Store(str(tmp_path / "store"))
    # Three runs of 10 s (8 s training at 1000 tokens/s): two side by side, then one.
    for key, start, frac in (("gt-a", 100.0, 0.24), ("gt-b", 100.0, 0.24), ("gt-c", 110.0, 0.24)):
        metrics = {
            "train_seconds": 8.0,
            "tokens_per_second": 1000.0,
            "t_process_start": start,
            "t_eval_end": start + 10.0,
            "gpu": True,
            "gpu_memory_fraction": frac,
        }
        _write(store, key, "w2s-tiny-1", "gt", metrics, {"workers": 1, "gpus_per_worker": 0.25})
    uri = str(tmp_path / "store")
    assert efficiency.main([uri, "--wall", "40", "--gpus-per-worker", "0.25"]) == 0
    out = capsys.readouterr().out
    # 24 s of training in 40 s; 30 run-seconds over the 20 s span; 24,000 tokens / 40 s.
    assert "3 runs in 40 s; training 24 s = 0.60 per wall second" in out
    assert "1.50 runs in flight on average, 2 at most; 600 tokens/s" in out
    # The same store claimed as whole-GPU runs: they were capped, so the check fails.
    assert efficiency.main([uri, "--wall", "40", "--gpus-per-worker", "1"]) == 1
    assert "on whole GPUs but memory-capped" in capsys.readouterr().err


def test_sweep_efficiency_fails_on_runs_off_the_gpu_or_uncapped(tmp_path, capsys):
    store = Store(str(tmp_path / "store"))
    base = {"train_seconds": 1.0, "tokens_per_second": 1.0, "t_process_start": 0.0}
    _write(store, "gt-cpu", "m", "gt", {**base, "t_eval_end": 2.0, "gpu": False}, {})
    _write(store, "gt-nocap", "m", "gt", {**base, "t_eval_end": 2.0, "gpu": True}, {})
    uri = str(tmp_path / "store")
    assert efficiency.main([uri, "--wall", "5", "--gpus-per-worker", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "gt-cpu: trained without a GPU" in err
    assert "gt-nocap: on a 0.5 GPU share but not memory-capped" in err
    assert efficiency.main([str(tmp_path / "nothing"), "--wall", "5"]) == 1
    assert "no complete runs" in capsys.readouterr().err
