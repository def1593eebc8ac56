"""Run packing on and off, side by side, through the product (w2sray.sweep.execute).

The spec's pretraining runs (not packed either way) are trained once into a base store; each
mode then starts from a fresh store holding copies of them and trains every other run, on the
same Ray cluster, in the order given. Per mode: wall time of the sweep, the runs' own training
and evaluation seconds (metrics.json), and the issue's ratio wall / (those seconds / slots),
where slots is how many runs the stage may train at once (1.0 would be no overhead at all).

    .venv/bin/python benchmarks/packing.py                       # sweeps/quickstart.yaml
    .venv/bin/python benchmarks/packing.py --spec sweeps/methods.yaml --order alone packed
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time

from w2sray.runs import Plan, plan_sweep
from w2sray.spec import load_spec
from w2sray.store import Store
from w2sray.sweep import concurrency, connect, execute

MODES = {"packed": None, "alone": {"max_runs": 1}}  # None: the spec's own (default) packing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default="sweeps/quickstart.yaml")
    ap.add_argument("--order", nargs="+", default=["packed", "alone"], choices=list(MODES))
    ap.add_argument("--keep", action="store_true", help="keep the stores")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="w2s_packing_")
    spec = load_spec(args.spec, storage_override=os.path.join(root, "base"))
    plan = plan_sweep(spec)
    connect()
    import ray

    slots = concurrency(list(plan.gt), ray.cluster_resources(), spec.max_concurrent_trials)
    t0 = time.time()
    base = Store(spec.storage)
    if plan.pretrain:
        pre = Plan(pretrain=plan.pretrain, gt=(), transfer=())
        execute(spec, pre, base, printer=lambda s: None)
    print(f"pretraining ({len(plan.pretrain)} runs, not packed): {time.time() - t0:.0f} s")
    rows = []
    for mode in args.order:
        store_path = os.path.join(root, mode)
        os.makedirs(os.path.join(store_path, "runs"))
        for r in plan.pretrain:
            shutil.copytree(base.run_dir(r.key), os.path.join(store_path, "runs", r.key))
        packing = MODES[mode] or spec.packing
        m_spec = dataclasses.replace(spec, storage=store_path, packing={**spec.packing, **packing})
        store = Store(store_path)
        t = time.time()
        out = execute(m_spec, plan, store, printer=lambda s: None)
        wall = time.time() - t
        trained = [k for k in out.done]
        work = 0.0
        for k in trained:
            m = store.read_json(k, "metrics.json")
            work += m["train_seconds"] + m.get("eval_seconds", 0.0)
        ratio = wall / (work / slots) if work else float("nan")
        rows.append((mode, len(trained), len(out.failed), wall, work, ratio))
    print(f"\n{args.spec}: slots {slots}; ratio = wall / (train+eval seconds / slots)")
    print("| mode | runs trained | failed | wall s | train+eval s | ratio |")
    print("|---|---|---|---|---|---|")
    for mode, n, nf, wall, work, ratio in rows:
        print(f"| {mode} | {n} | {nf} | {wall:.0f} | {work:.0f} | {ratio:.2f} |")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
