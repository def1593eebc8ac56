"""w2sray command line: plan, run and report weak-to-strong sweeps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from w2sray.spec import SpecError, SweepSpec, load_spec
from w2sray.store import Store

EPILOG = """examples:
  w2sray plan sweeps/quickstart.yaml            list the runs, what is done and what will run
  w2sray run sweeps/quickstart.yaml             run the sweep on a local Ray cluster, then report
  w2sray run SPEC --store s3://bucket/w2s       keep results in object storage
  w2sray run SPEC --address auto                join a running Ray cluster (RAY_ADDRESS works too)
  w2sray report w2s_results/quickstart          rebuild the PGR report from a store
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="w2sray",
        description="Weak-to-strong generalization sweeps on Ray Tune, Ray Train and DeepSpeed. "
        "A sweep trains every ladder model on ground truth, has each weaker model label data for "
        "each stronger one, trains the stronger one on those labels, and reports the performance "
        "gap recovered (PGR) as weak x strong matrices.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a sweep (skipping finished runs), then write the report")
    run.add_argument("spec", help="sweep spec YAML (see sweeps/)")
    run.add_argument("--store", help="results location (path, s3://, gs://); overrides the spec")
    run.add_argument(
        "--address",
        help="Ray cluster address to join (default: RAY_ADDRESS or a new local cluster)",
    )  # noqa: E501
    run.add_argument("--no-report", action="store_true", help="skip the report at the end")

    plan = sub.add_parser("plan", help="list the runs of a sweep and their status; runs nothing")
    plan.add_argument("spec", help="sweep spec YAML")
    plan.add_argument("--store", help="results location; overrides the spec")

    rep = sub.add_parser("report", help="write PGR tables, matrices and plots from a store")
    rep.add_argument("store", help="results location (path, s3://, gs://)")
    rep.add_argument("--out", help="report folder (default: <store>/report for a local store)")
    return p


def _load(path: str, store: str | None) -> SweepSpec:
    spec = load_spec(path, storage_override=store)
    target = Path(spec.storage)
    if "://" not in spec.storage and target.exists() and not target.is_dir():
        raise SpecError(path, [f"storage: {spec.storage!r} exists and is not a directory"])
    return spec


def cmd_plan(args: argparse.Namespace) -> int:
    from w2sray.runs import plan_sweep

    spec = _load(args.spec, args.store)
    plan = plan_sweep(spec)
    store = Store(spec.storage)
    failed = {f.get("key") for f in store.failures()}
    print(f"sweep {spec.name}: store {spec.storage}")
    header = (
        f"{'stage':9} {'key':27} {'dataset':10} {'weak':12} {'model':12} {'method':34} seed status"  # noqa: E501
    )
    print(header)
    counts = {"done": 0, "todo": 0}
    for stage, runs in plan.stages:
        for r in runs:
            status = "done" if store.is_complete(r.key) else "todo"
            counts[status] += 1
            note = " (failed before)" if status == "todo" and r.key in failed else ""
            res = r.resources
            print(
                f"{stage:9} {r.key:27} {r.dataset['name']:10} {r.weak_model or '-':12} "
                f"{r.model['name']:12} {r.variant:34} {r.seed:4} {status}{note}"
                f"  [{res['workers']}w zero{res['zero_stage']}]"
            )
    n_gt = len(plan.gt)
    print(
        f"\n{len(plan.gt) + len(plan.transfer)} runs: {n_gt} ground-truth "
        f"(= {len(spec.datasets)} datasets x {len(spec.models)} models x {len(spec.seeds)} seeds),"
        f" {len(plan.transfer)} transfers; {counts['done']} done, {counts['todo']} to run"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from w2sray.runs import plan_sweep
    from w2sray.sweep import execute

    spec = _load(args.spec, args.store)
    plan = plan_sweep(spec)
    store = Store(spec.storage)
    print(
        f"sweep {spec.name}: {len(plan.gt)} ground-truth runs, {len(plan.transfer)} transfer runs"
        f" -> {spec.storage}",
        flush=True,
    )
    out = execute(spec, plan, store, address=args.address, printer=lambda s: print(s, flush=True))
    print(
        f"\ntrained {len(out.done)}, already complete {len(out.skipped)}, failed {len(out.failed)}"
        f" in {out.wall_seconds:.0f}s"
    )
    for key, err in out.failed.items():
        print(f"  FAILED {key}: {err}")
    if not args.no_report:
        _report(store, None)
    return 1 if out.failed else 0


def _report(store: Store, out: str | None) -> int:
    from w2sray.analysis import format_matrix, write_report
    from w2sray.analysis.collect import collect

    tables = collect(store)
    if not tables.sweeps:
        print(f"{store.uri}: no sweep found in this store", file=sys.stderr)
        return 2
    out_dir = Path(out) if out else Path(store.root if store.local else "w2s_report") / "report"
    paths = write_report(tables.results, tables.gt, tables.failures, tables.ladder, out_dir)
    if not tables.gt.empty:
        acc = tables.gt.groupby(["dataset", "model"])["acc"].mean().unstack("model")
        cols = [m for m in tables.ladder if m in acc.columns]
        print("\nground-truth test accuracy (mean over seeds):")
        print(acc[cols].round(3).to_string())
    for m in paths.matrices:
        print(f"\nPGR  dataset={m.dataset}  method={m.variant}  (rows: weak, columns: strong)")
        print(format_matrix(m))
    print(f"\nreport:  {paths.summary_md}")
    print(f"table:   {paths.table_parquet}  {paths.table_csv}")
    for h in paths.heatmaps:
        print(f"heatmap: {h}")
    print(f"plot:    {paths.scatter}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    return _report(Store(args.store), args.out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"run": cmd_run, "plan": cmd_plan, "report": cmd_report}[args.command](args)
    except SpecError as exc:
        print(f"error: invalid sweep spec\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
