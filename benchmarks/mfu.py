"""Training throughput and model FLOPs utilisation (MFU) of every complete run in a store.

    .venv/bin/python benchmarks/mfu.py STORE [--gpu-name NAME] [--peak FLOPS]

Per run: tokens/s is metrics.json ``tokens_per_second`` (real, non-pad tokens of all workers
over the training loop's wall time; evaluation excluded), and

    MFU = 6 * params * tokens_per_second / (peak_bf16_flops * gpus)

with ``gpus`` = workers x gpus_per_worker of the run (tokens/s is summed over workers, the peak
is per GPU). 6 N flops per token is the usual forward + backward estimate: it ignores the
attention-score flops and counts the embedding parameters (which do no matmul), so for the tiny
built-in models, whose vocabulary embedding is a large share of their parameters, it is only a
rough figure; those models are far too small to load a GPU anyway. The number checks that runs
train on the GPU at a plausible rate, nothing more.

The peak (dense bf16, per GPU) comes from PEAK_BF16_FLOPS when set, else from PEAK_TABLE by the
GPU's name (--gpu-name, else the name the run recorded, else nvidia-smi). Without a peak the
throughput is printed and MFU is not.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from typing import Any

# Dense bf16 tensor-core peaks per GPU (vendor data sheets, without sparsity). Checked in order;
# the first pattern (a regex searched in the nvidia-smi name) that matches wins.
PEAK_TABLE: list[tuple[str, str, float]] = [
    (r"H100.*(SXM|HBM3)", "H100 SXM", 989e12),
    (r"H200(?!.*NVL)", "H200", 989e12),
    (r"A100", "A100", 312e12),
    (r"\bL4\b", "L4", 121e12),
]


def peak_for(gpu_name: str | None) -> tuple[float | None, str]:
    """(peak bf16 FLOP/s per GPU, where it came from); (None, why) when unknown."""
    env = os.environ.get("PEAK_BF16_FLOPS")
    if env:
        try:
            return float(env), "PEAK_BF16_FLOPS"
        except ValueError:
            return None, f"PEAK_BF16_FLOPS={env!r} is not a number"
    if gpu_name:
        for pattern, label, peak in PEAK_TABLE:
            if re.search(pattern, gpu_name, flags=re.IGNORECASE):
                return peak, f"table: {label}"
    known = ", ".join(label for _, label, _ in PEAK_TABLE)
    return None, (
        f"GPU {gpu_name or '(unknown)'} is not in the table ({known}): set PEAK_BF16_FLOPS "
        "to its dense bf16 peak in FLOP/s, e.g. PEAK_BF16_FLOPS=989e12"
    )


def nvidia_smi_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return names[0] if names else None


def mfu(params: float, tokens_per_second: float, peak: float, gpus: float) -> float:
    return 6.0 * params * tokens_per_second / (peak * gpus)


def collect(store_uri: str) -> list[dict[str, Any]]:
    """One row per complete run: its config's model / kind / layout and its metrics."""
    from w2sray.store import Store

    store = Store(store_uri)
    rows = []
    for key in store.run_keys():
        if not store.is_complete(key):
            continue
        m, cfg = store.read_json(key, "metrics.json"), store.read_json(key, "config.json")
        res = cfg.get("resources", {})
        workers = m.get("workers") or res.get("workers", 1)
        rows.append(
            {
                "key": key,
                "model": cfg["model"]["name"],
                "kind": cfg["kind"],
                "weak": cfg.get("weak_model"),
                "zero_stage": m.get("zero_stage", res.get("zero_stage")),
                "workers": workers,
                "gpus": workers * (res.get("gpus_per_worker") or 0),
                "dtype": m.get("dtype"),
                "gpu_name": m.get("gpu_name"),
                "params": m.get("params"),
                "tokens_per_second": m.get("tokens_per_second"),
                "acc": m.get("acc"),
            }
        )
    order = {"gt": 0, "transfer": 1}
    return sorted(rows, key=lambda r: (order.get(r["kind"], 2), r["model"], r["weak"] or ""))


def _fmt_params(n: float | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def report(rows: list[dict[str, Any]], peak: float | None) -> list[str]:
    head = (
        f"{'run':<22} {'model':<12} {'zero':>4} {'gpus':>4} {'dtype':>5} {'params':>8} "
        f"{'tokens/s':>11} {'MFU':>9} {'acc':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        label = r["kind"] if r["kind"] == "gt" else f"w2s from {r['weak']}"
        tps, params, gpus = r["tokens_per_second"], r["params"], r["gpus"]
        if peak is None or not tps or not params:
            util = "?"
        elif not gpus:
            util = "(cpu)"
        else:
            util = f"{100 * mfu(params, tps, peak, gpus):.4f}%"
        tps_s = f"{tps:,.0f}" if tps else "?"
        acc = f"{r['acc']:.3f}" if isinstance(r["acc"], (int, float)) else "?"
        lines.append(
            f"{label:<22} {r['model']:<12} {r['zero_stage'] or 0:>4} {gpus:>4g} "
            f"{r['dtype'] or '?':>5} {_fmt_params(params):>8} {tps_s:>11} {util:>9} {acc:>6}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", help="a w2sray store (local path or s3:// / gs:// URI)")
    ap.add_argument("--gpu-name", help="GPU name as nvidia-smi prints it (for the peak table)")
    ap.add_argument("--peak", type=float, help="peak bf16 FLOP/s per GPU (overrides the table)")
    args = ap.parse_args(argv)

    rows = collect(args.store)
    if not rows:
        print(f"mfu: no complete runs in {args.store}", file=sys.stderr)
        return 1
    recorded = next((r["gpu_name"] for r in rows if r["gpu_name"]), None)
    gpu_name = args.gpu_name or recorded or nvidia_smi_name()
    if args.peak:
        peak, source = args.peak, "--peak"
    else:
        peak, source = peak_for(gpu_name)
    if peak is None:
        print(f"GPU: {gpu_name or '(unknown)'}; MFU not computed: {source}")
    else:
        print(
            f"GPU: {gpu_name or '(unknown)'}; peak bf16 {peak / 1e12:g} TFLOP/s per GPU ({source})"
        )
    print("MFU = 6 * params * tokens/s / (peak * gpus); tokens/s over the training loop only")
    print("\n".join(report(rows, peak)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
