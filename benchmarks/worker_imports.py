"""What a training worker process pays to import DeepSpeed and to pass its ZeRO optimizer
check, with DeepSpeed's unused imports (its autotuner's MLflow, the ZeRO check's Muon optimizer
with torch._dynamo / _inductor) and without them (w2sray.train.zero.import_deepspeed), side by
side in fresh interpreters, alternating, as a new Ray Train worker process does.

    .venv/bin/python benchmarks/worker_imports.py --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CHILD = """
import sys, time
t0 = time.perf_counter()
import torch, transformers
t1 = time.perf_counter()
if sys.argv[1] == "masked":
    from w2sray.train.zero import import_deepspeed
    import_deepspeed()
else:
    import deepspeed
t2 = time.perf_counter()
try:
    from deepspeed.runtime.zero.muon.muon_optimizer import MuonWithAuxAdam  # ZeRO's check
except ImportError:
    pass
t3 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows: dict[str, list[list[float]]] = {"plain": [], "masked": []}
    for _ in range(args.rounds):
        for mode in rows:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True
            )
            last = out.stdout.strip().splitlines()[-1]  # DeepSpeed logs to stdout too
            rows[mode].append([float(x) for x in last.split()])
    print("| import | torch + transformers s | deepspeed s | ZeRO optimizer check s | total s |")
    print("|---|---|---|---|---|")
    for mode, runs in rows.items():
        med = [statistics.median(r[i] for r in runs) for i in range(3)]
        print(f"| {mode} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} | {sum(med):.2f} |")


if __name__ == "__main__":
    main()
