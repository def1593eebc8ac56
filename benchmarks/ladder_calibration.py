"""Train one ladder model on ground truth under alternative training settings, for chosen seeds.

Used to check why w2s-tiny-3 fell below w2s-tiny-2 in some seeds of sweeps/methods.yaml
(benchmarks/RESULTS.md section 6). Each variant is the base spec with the model's own ``train:``
overrides; only that model's GT runs train (the real execute(), on a local Ray cluster).

    .venv/bin/python benchmarks/ladder_calibration.py --seeds 1 2
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import yaml

from w2sray.runs import Plan, plan_sweep
from w2sray.spec import load_spec
from w2sray.store import Store
from w2sray.sweep import execute

VARIANTS = {"lr 5e-4": {"lr": 5e-4}, "5 epochs": {"epochs": 5}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="sweeps/methods.yaml")
    ap.add_argument("--model", default="w2s-tiny-3")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="w2s-calib-"))
    base = yaml.safe_load(open(args.spec))
    runs = []
    for i, (label, train) in enumerate(VARIANTS.items()):
        raw = {**copy.deepcopy(base), "name": f"calib{i}", "seeds": args.seeds}
        raw["storage"] = str(root / "store")
        raw["models"] = [
            {"name": m, "source": m, "train": train} if m == args.model else m
            for m in base["models"]
        ]
        path = root / f"calib{i}.yaml"
        path.write_text(yaml.safe_dump(raw))
        spec = load_spec(path)
        runs += [(label, r) for r in plan_sweep(spec).gt if r.model.name == args.model]
    store = Store(str(root / "store"))
    t0 = time.time()
    execute(spec, Plan(gt=tuple(r for _, r in runs), transfer=()), store, printer=print)
    print(f"\n{args.model} GT test accuracy ({time.time() - t0:.0f} s, store {root}):")
    for label, r in runs:
        print(f"  {label:10s} seed {r.seed}: {store.read_json(r.key, 'metrics.json')['acc']:.4f}")


if __name__ == "__main__":
    main()
