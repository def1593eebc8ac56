"""The whole sweep as one dataflow experiment against stage by stage, side by side, through the
product (w2sray.sweep.execute), each from a fresh store (pretraining included) on one local Ray
cluster, in the order given.

Per mode: wall time of execute, the runs' own seconds (train + eval; a pretraining run's
train), the issue's ratio wall / (those seconds / slots), and per run the seconds from its
loop start to its first step (setup: imports inside the loop, data, model, engine). Also the
floor the sweep's shape sets on that ratio whatever the scheduler does: its critical path (the
longest chain of runs that read each other's results, in the runs' own measured seconds)
against the work per slot: floor = max(1, critical path / (work / slots)).

    .venv/bin/python benchmarks/dataflow.py                        # sweeps/quickstart.yaml
    .venv/bin/python benchmarks/dataflow.py --order stages dataflow
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time

from w2sray.runs import plan_sweep
from w2sray.spec import load_spec
from w2sray.store import Store
from w2sray.sweep import concurrency, connect, execute

MODES = {"dataflow": True, "stages": False}


def critical_path(runs: list, seconds: dict[str, float]) -> float:
    """The longest chain of runs that read each other's results (Run.needs), in ``seconds``
    per run (runs not trained count 0)."""
    by_key = {r.key: r for r in runs}
    done: dict[str, float] = {}

    def finish(key: str) -> float:
        if key not in done:
            needs = [n for n in by_key[key].needs if n in by_key]
            done[key] = seconds.get(key, 0.0) + max((finish(n) for n in needs), default=0.0)
        return done[key]

    return max((finish(k) for k in by_key), default=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default="sweeps/quickstart.yaml")
    ap.add_argument("--order", nargs="+", default=["dataflow", "stages"], choices=list(MODES))
    ap.add_argument("--keep", action="store_true", help="keep the stores")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="w2s_dataflow_")
    spec = load_spec(args.spec, storage_override=os.path.join(root, "unused"))
    plan = plan_sweep(spec)
    connect()
    import ray

    slots = concurrency(plan.all_runs(), ray.cluster_resources(), spec.max_concurrent_trials)
    rows = []
    for mode in args.order:
        store_path = os.path.join(root, mode)
        packing = {**spec.packing, "dataflow": MODES[mode]}
        m_spec = dataclasses.replace(spec, storage=store_path, packing=packing)
        store = Store(store_path)
        t = time.time()
        out = execute(m_spec, plan, store, printer=lambda s: None)
        wall = time.time() - t
        work, setups, own = 0.0, [], {}
        for k in out.done:
            m = store.read_json(k, "metrics.json")
            own[k] = m["train_seconds"] + m.get("eval_seconds", 0.0)
            work += own[k]
            if "t_train_start" in m:
                setups.append(m["t_train_start"] - m["t_loop_start"])
        ratio = wall / (work / slots) if work else float("nan")
        setup = f"{min(setups):.1f}-{max(setups):.1f}" if setups else "-"
        path = critical_path(plan.all_runs(), own)
        floor = max(1.0, path / (work / slots)) if work else float("nan")
        rows.append((mode, len(out.done), len(out.failed), wall, work, ratio, setup, path, floor))
        print(f"{mode}: {wall:.0f} s", flush=True)
    print(f"\n{args.spec}: slots {slots}; ratio = wall / (train+eval seconds / slots)")
    print(
        "| mode | runs trained | failed | wall s | train+eval s | ratio | setup s per run "
        "| critical path s | ratio floor |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, n, nf, wall, work, ratio, setup, path, floor in rows:
        print(
            f"| {mode} | {n} | {nf} | {wall:.0f} | {work:.0f} | {ratio:.2f} | {setup} "
            f"| {path:.0f} | {floor:.2f} |"
        )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
