"""How well a finished sweep used its time: training seconds per wall second, runs in flight.

    .venv/bin/python benchmarks/sweep_efficiency.py STORE --wall SECONDS [--label NAME]
        [--gpus-per-worker G]

From every complete run's metrics.json (written by the training loop):

- ``train_s``: the sum over runs of ``train_seconds`` (the optimisation loop's wall time);
  ``train_s / wall`` is training done per second of the sweep (above 1 when runs overlap);
- ``in_flight``: the mean number of runs alive, the sum of each run's process start to its last
  artifact (``t_process_start`` .. ``t_eval_end``) over the span from the first start to the
  last end; ``peak`` the most alive at once;
- ``tokens/s``: the tokens all runs trained on (``tokens_per_second`` x ``train_seconds``) per
  wall second.

``--gpus-per-worker G`` checks that every run ran as asked: on a GPU, and with G < 1 under a
memory cap (``gpu_memory_fraction`` recorded, w2sray/train/gpu_share.py); the command fails
(exit 1) otherwise, so a run that fell back to CPU or a missing cap is not mistaken for a
result. benchmarks/gpu_check.sh runs the same sweep with whole GPUs and with fractions and
prints both.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def collect(store_uri: str) -> list[dict[str, Any]]:
    """One row per complete run: its timing, tokens and how it ran."""
    from w2sray.store import Store

    store = Store(store_uri)
    rows = []
    for key in store.run_keys():
        if not store.is_complete(key):
            continue
        m = store.read_json(key, "metrics.json")
        rows.append(
            {
                "key": key,
                "train_seconds": float(m.get("train_seconds") or 0.0),
                "tokens": float(m.get("tokens_per_second") or 0.0)
                * float(m.get("train_seconds") or 0.0),
                "start": m.get("t_process_start"),
                "end": m.get("t_eval_end"),
                "gpu": m.get("gpu"),
                "gpu_memory_fraction": m.get("gpu_memory_fraction"),
            }
        )
    return rows


def peak_in_flight(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, d in events:  # an end sorts before a start at the same instant
        now += d
        peak = max(peak, now)
    return peak


def summarize(rows: list[dict[str, Any]], wall: float) -> dict[str, float]:
    """The sweep's figures (see the module docstring); ``wall`` is the sweep's wall time."""
    if wall <= 0:
        raise ValueError(f"wall must be > 0 seconds, got {wall!r}")
    spans = [(r["start"], r["end"]) for r in rows if r["start"] and r["end"]]
    span = max(e for _, e in spans) - min(s for s, _ in spans) if spans else 0.0
    train = sum(r["train_seconds"] for r in rows)
    return {
        "runs": len(rows),
        "wall": wall,
        "train_s": train,
        "train_per_wall": train / wall,
        "in_flight": sum(e - s for s, e in spans) / span if span > 0 else 0.0,
        "peak": peak_in_flight(spans),
        "tokens_per_s": sum(r["tokens"] for r in rows) / wall,
    }


def problems(rows: list[dict[str, Any]], gpus_per_worker: float) -> list[str]:
    """Runs that did not run as a sweep with ``gpus_per_worker`` should have."""
    out = []
    for r in rows:
        if r["gpu"] is not True:
            out.append(f"{r['key']}: trained without a GPU (metrics.json gpu={r['gpu']!r})")
        elif 0 < gpus_per_worker < 1 and r["gpu_memory_fraction"] is None:
            out.append(f"{r['key']}: on a {gpus_per_worker:g} GPU share but not memory-capped")
        elif gpus_per_worker >= 1 and r["gpu_memory_fraction"] is not None:
            out.append(f"{r['key']}: on whole GPUs but memory-capped")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", help="a w2sray store (local path or s3:// / gs:// URI)")
    ap.add_argument("--wall", type=float, required=True, help="the sweep's wall time, seconds")
    ap.add_argument("--label", default="sweep", help="name printed before the figures")
    ap.add_argument(
        "--gpus-per-worker",
        type=float,
        help="check that every run ran on a GPU, memory-capped when this is a fraction",
    )
    args = ap.parse_args(argv)

    rows = collect(args.store)
    if not rows:
        print(f"sweep_efficiency: no complete runs in {args.store}", file=sys.stderr)
        return 1
    s = summarize(rows, args.wall)
    print(
        f"{args.label}: {s['runs']} runs in {s['wall']:.0f} s; training {s['train_s']:.0f} s "
        f"= {s['train_per_wall']:.2f} per wall second; {s['in_flight']:.2f} runs in flight on "
        f"average, {s['peak']} at most; {s['tokens_per_s']:,.0f} tokens/s"
    )
    if args.gpus_per_worker is not None:
        bad = problems(rows, args.gpus_per_worker)
        for line in bad:
            print(f"sweep_efficiency: {line}", file=sys.stderr)
        if bad:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
