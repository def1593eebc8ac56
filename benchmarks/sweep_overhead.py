"""Wall time of a sweep against the sum of its runs' own training times, and where the rest goes.

Runs `w2sray run SPEC --store <fresh temp dir>` as a user would, then reads each run's timeline
(stamped by the trial and the worker loop) from the store and Tune's result files:

  ray start-up   trial calls TorchTrainer.fit -> worker process exists
  worker start   worker process exists -> train loop entered (imports, process group)
  setup          data, tokenizer, model, deepspeed.initialize
  train / eval   the training steps / test and weak-label predictions
  teardown       loop ends -> fit returns

    .venv/bin/python benchmarks/sweep_overhead.py [sweeps/quickstart.yaml]
    .venv/bin/python benchmarks/sweep_overhead.py SPEC --store STORE   # analyse a finished sweep
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import yaml


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    spec_path = args[0] if args else "sweeps/quickstart.yaml"
    if "--store" in sys.argv:  # a sweep already run: its own timings only
        store, wall = sys.argv[sys.argv.index("--store") + 1], float("nan")
    else:
        store = tempfile.mkdtemp(prefix="w2s-bench-")
        cmd = [os.path.join(".venv", "bin", "w2sray"), "run", spec_path, "--store", store]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise SystemExit(f"sweep failed with exit code {proc.returncode}")

    rows = []
    for f in glob.glob(os.path.join(store, "ray", "*", "*", "result.json")):
        lines = [json.loads(x) for x in open(f) if x.strip()]
        r = next((x for x in reversed(lines) if "t_fit_start" in x), None)
        if r:
            rows.append(r)
    parts = {
        "ray start-up": lambda r: r["t_process_start"] - r["t_fit_start"],
        "worker start": lambda r: r["t_loop_start"] - r["t_process_start"],
        "setup": lambda r: r["t_train_start"] - r["t_loop_start"],
        "train": lambda r: r["train_seconds"],
        "eval": lambda r: r["eval_seconds"],
        "teardown": lambda r: r["t_fit_end"] - r["t_eval_end"],
    }
    spec = yaml.safe_load(open(spec_path))
    n_expected_gt = len(spec["datasets"]) * len(spec["models"]) * len(spec.get("seeds", [0]))
    n_gt = sum(1 for r in rows if r["config"]["run_key"].startswith("gt-"))
    train_sum = sum(r["train_seconds"] for r in rows)
    fit_sum = sum(r["t_fit_end"] - r["t_fit_start"] for r in rows)
    print(f"spec {spec_path}: {len(rows)} runs ({n_gt} ground-truth trainings; ")
    print(f"  datasets x models x seeds = {n_expected_gt})")
    print(f"wall time of `w2sray run` (Ray start to report): {wall:.0f} s")
    print(
        f"sum of runs' training time:   {train_sum:.0f} s  (wall / train = {wall / train_sum:.1f})"
    )
    print(f"sum of runs' fit time:        {fit_sum:.0f} s  (runs overlap, up to the concurrency)")
    print("mean per run, seconds:")
    for name, fn in parts.items():
        vals = [fn(r) for r in rows]
        print(f"  {name:13} {sum(vals) / len(vals):6.1f}")
    overhead = [r["t_fit_end"] - r["t_fit_start"] - r["train_seconds"] for r in rows]
    print(f"  fixed cost per run (fit minus train): {sum(overhead) / len(overhead):.1f} s")
    print(f"store: {store}")


if __name__ == "__main__":
    main()
