"""Probes on cached features against full fine-tuning, side by side: wall time and PGR.

Through the product (w2sray.sweep.execute) on one local Ray cluster. The sweeps' pretraining
runs (the same recipes in both specs, so the same keys) are trained once into a base store;
each mode then starts from a fresh store holding copies of them, so both pay the same for
pretraining and the comparison is of what follows: for ``probe``, its features runs (timed
apart) and its probe GT and transfer runs; for ``full``, the fine-tuning GT and transfer runs.
``probe+seed`` then adds a second seed to the probe store: its features are reused, so it shows
what one more seed of probes costs. PGR and GT accuracy per model come from each store's
analysis tables (w2sray.analysis.collect).

    .venv/bin/python benchmarks/probes.py      # sweeps/probes.yaml vs itself without probes

Real encoders (the ladder of sweeps/sst2_encoders.yaml from local copies): ``--full-store``
reads the fine-tuned sweep's results from a store where it ran instead of training it again
(its wall time is then the sum of its runs' own seconds, a lower bound), and ``--probe`` turns
the full spec into a probe sweep:

    .venv/bin/python benchmarks/probes.py --full sweeps/sst2_encoders.yaml \\
        --probe '{"head": "logreg"}' --model-dir /tmp/ladder/models \\
        --full-store w2s_results/sst2_encoders
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from typing import Any

from w2sray.runs import Plan, plan_sweep
from w2sray.spec import SweepSpec, load_spec
from w2sray.store import Store
from w2sray.sweep import connect, execute


def _spec(path: str, storage: str, model_dir: str | None) -> SweepSpec:
    spec = load_spec(path, storage_override=storage)
    if model_dir:
        from w2sray.model_dir import apply_model_dir

        spec, _ = apply_model_dir(spec, model_dir)
    return spec


def _with_probe(spec: SweepSpec, probe: dict[str, Any]) -> SweepSpec:
    return dataclasses.replace(
        spec, name=f"{spec.name}-probe", train=dataclasses.replace(spec.train, probe=probe)
    )


def _tables(store: Store) -> tuple[dict[str, float], dict[tuple[str, str, str], float]]:
    """GT accuracy per model and mean PGR per (weak, strong, method), over seeds."""
    from w2sray.analysis.collect import collect
    from w2sray.analysis.pgr import add_pgr

    t = collect(store)
    gt = t.gt.groupby("model")["acc"].mean().to_dict()
    res = add_pgr(t.results)
    pgr = res.groupby(["weak", "strong", "method"])["pgr"].mean().to_dict()
    return gt, pgr


def _work(store: Store, keys: list[str]) -> float:
    """The runs' own seconds (setup + train + eval, or a features run's embedding)."""
    total = 0.0
    for k in keys:
        m = store.read_json(k, "metrics.json")
        total += m.get("setup_seconds", 0.0) + m.get("train_seconds", 0.0)
        total += m.get("eval_seconds", 0.0) + m.get("embed_seconds", 0.0)  # features runs
    return total


def _seed_store(base: Store, path: str, keys: list[str]) -> Store:
    os.makedirs(os.path.join(path, "runs"), exist_ok=True)
    for k in keys:
        shutil.copytree(base.run_dir(k), os.path.join(path, "runs", k))
    return Store(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--full", help="the fine-tuning sweep (default: --probes with train.probe removed)"
    )
    ap.add_argument("--probes", default="sweeps/probes.yaml", help="its probe version")
    ap.add_argument("--probe", help="JSON train.probe: build the probe sweep from --full instead")
    ap.add_argument("--model-dir", help="hub ids from local copies (as w2sray run --model-dir)")
    ap.add_argument("--full-store", help="read the full sweep's results here, do not train it")
    ap.add_argument("--no-extra-seed", action="store_true", help="skip the probe+seed row")
    ap.add_argument("--keep", action="store_true", help="keep the stores")
    args = ap.parse_args()
    if args.probe and not args.full:
        ap.error("--probe builds the probe sweep from --full: give --full")
    root = tempfile.mkdtemp(prefix="w2s_probes_")
    if args.full:
        full = _spec(args.full, os.path.join(root, "full"), args.model_dir)
    else:  # the same task, ladder and training settings, fine-tuned instead of probed
        full = _spec(args.probes, os.path.join(root, "full"), args.model_dir)
        full = dataclasses.replace(
            full, name=full.name.replace("probes", "full"),
            train=dataclasses.replace(full.train, probe=None),
        )  # fmt: skip
    if args.probe:
        probe = _with_probe(
            _spec(args.full, os.path.join(root, "probe"), args.model_dir), json.loads(args.probe)
        )
    else:
        probe = _spec(args.probes, os.path.join(root, "probe"), args.model_dir)
    full_plan, probe_plan = plan_sweep(full), plan_sweep(probe)
    assert {r.key for r in full_plan.pretrain} == {r.key for r in probe_plan.pretrain}, (
        "the two sweeps must pretrain the same way"
    )
    connect()
    rows = []
    base = Store(os.path.join(root, "base"))
    pre_keys = [r.key for r in probe_plan.pretrain]
    if probe_plan.pretrain:
        t = time.time()
        execute(probe, Plan(pretrain=probe_plan.pretrain, gt=(), transfer=()), base, printer=print)
        print(f"pretraining ({len(pre_keys)} runs, shared): {time.time() - t:.0f} s")

    store = _seed_store(base, probe.storage, pre_keys)
    t = time.time()
    out_f = execute(
        probe, Plan(features=probe_plan.features, gt=(), transfer=()), store, printer=print
    )
    t_feat = time.time() - t
    t = time.time()
    out_p = execute(probe, probe_plan, store, printer=print)
    t_probe = time.time() - t
    assert not out_f.failed and not out_p.failed, (out_f.failed, out_p.failed)
    probe_gt, probe_pgr = _tables(store)
    rows.append(("probe: features", len(out_f.done), t_feat, _work(store, out_f.done)))
    rows.append(("probe: GT + transfer", len(out_p.done), t_probe, _work(store, out_p.done)))
    if not args.no_extra_seed:
        seeds = (*probe.seeds, max(probe.seeds) + 1)
        more = dataclasses.replace(probe, seeds=seeds)
        t = time.time()
        out_s = execute(more, plan_sweep(more), store, printer=print)
        rows.append(
            ("probe: one more seed", len(out_s.done), time.time() - t, _work(store, out_s.done))
        )

    if args.full_store:
        fstore = Store(args.full_store)
        keys = [r.key for r in [*full_plan.gt, *full_plan.transfer]]
        missing = [k for k in keys if not fstore.is_complete(k)]
        assert not missing, f"{len(missing)} runs of {args.full} are not in {args.full_store}"
        work = _work(fstore, keys)
        rows.append(("full: GT + transfer (stored; wall = sum of runs)", len(keys), work, work))
    else:
        fstore = _seed_store(base, full.storage, pre_keys)
        t = time.time()
        out = execute(full, full_plan, fstore, printer=print)
        assert not out.failed, out.failed
        rows.append(
            ("full: GT + transfer", len(out.done), time.time() - t, _work(fstore, out.done))
        )
    full_gt, full_pgr = _tables(fstore)

    versus = f"probe {args.probe}" if args.probe else args.probes
    print(f"\n{args.full} (full fine-tuning) vs {versus}")
    print("| mode | runs trained | wall s | runs' own s |")
    print("|---|---|---|---|")
    for name, n, wall, work in rows:
        print(f"| {name} | {n} | {wall:.0f} | {work:.0f} |")
    print("\n| model | GT acc, probe | GT acc, full |")
    print("|---|---|---|")
    for m in [m.name for m in full.models]:
        print(f"| {m} | {probe_gt.get(m, float('nan')):.3f} | {full_gt.get(m, float('nan')):.3f} |")
    print("\n| weak → strong | method | PGR, probe | PGR, full |")
    print("|---|---|---|---|")
    for key in sorted(set(probe_pgr) | set(full_pgr)):
        w, s, meth = key
        print(
            f"| {w} → {s} | {meth} | {probe_pgr.get(key, float('nan')):.2f} | "
            f"{full_pgr.get(key, float('nan')):.2f} |"
        )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"\nstores kept under {root}")


if __name__ == "__main__":
    main()
