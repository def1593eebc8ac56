"""w2sray command line: plan, run and report weak-to-strong sweeps."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from w2sray.spec import SpecError, SweepSpec, load_spec
from w2sray.store import Store

EPILOG = """examples:
  w2sray plan sweeps/quickstart.yaml            list the runs, what is done and what will run
  w2sray plan SPEC --gpu-mem 80 --gpus-per-node 8
                                                and estimate GPU memory, suggest ZeRO layouts
  w2sray plan SPEC --explain gt-0a29            what that run's key hashes; why it would retrain
  w2sray run sweeps/quickstart.yaml             run the sweep on a local Ray cluster, then report
  w2sray run SPEC --store s3://bucket/w2s       keep results in object storage
  w2sray run SPEC --address auto                join a running Ray cluster (RAY_ADDRESS works too)
  w2sray run SPEC --model-dir /tmp/ladder/models
                                                hub models from local copies (W2SRAY_MODEL_DIR)
  w2sray report w2s_results/quickstart          rebuild the PGR report from a store
  w2sray datasets                               list the registered datasets (sst2 for one)
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
    _model_dir_option(run)

    plan = sub.add_parser("plan", help="list the runs of a sweep and their status; runs nothing")
    plan.add_argument("spec", help="sweep spec YAML")
    plan.add_argument("--store", help="results location; overrides the spec")
    _model_dir_option(plan)
    plan.add_argument(
        "--gpu-mem",
        type=float,
        metavar="GiB",
        help="memory of one GPU in GiB: add per-model memory estimates and a suggested "
        "layout (workers, ZeRO stage, offload); needs --gpus-per-node",
    )
    plan.add_argument("--gpus-per-node", type=int, metavar="N", help="GPUs per node")
    plan.add_argument(
        "--max-nodes",
        type=int,
        default=1,
        metavar="N",
        help="nodes a run may span in the suggestion (default 1)",
    )
    plan.add_argument(
        "--explain",
        metavar="KEY",
        help="for the runs whose key starts with KEY: everything their key hashes and, when "
        "one is not stored, the closest stored run of its kind and the settings that differ "
        "(why it would retrain)",
    )

    rep = sub.add_parser("report", help="write PGR tables, matrices and plots from a store")
    rep.add_argument("store", help="results location (path, s3://, gs://)")
    rep.add_argument("--out", help="report folder (default: <store>/report for a local store)")

    ds = sub.add_parser(
        "datasets",
        help="list the registered datasets: source, splits, params",
        description="List the datasets a spec's `datasets:` may name: where their rows come "
        "from, which split trains (A, B) and which tests, their params with defaults, and what "
        "they need installed. Hub datasets need `pip install 'w2sray[hub]'`.",
    )
    ds.add_argument("name", nargs="?", help="one dataset: its full description")
    return p


def _model_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model-dir",
        metavar="DIR",
        help="local copies of the spec's hub models: hub id org/name loads from DIR/org/name "
        "or DIR/name where that folder has a config.json (default: $W2SRAY_MODEL_DIR); the "
        "plan lists what resolved",
    )


def _load(path: str, store: str | None, model_dir: str | None = None) -> SweepSpec:
    spec = load_spec(path, storage_override=store)
    target = Path(spec.storage)
    if "://" not in spec.storage and target.exists() and not target.is_dir():
        raise SpecError(path, [f"storage: {spec.storage!r} exists and is not a directory"])
    from w2sray.model_dir import apply_model_dir, describe, model_dir_from

    folder, origin = model_dir_from(model_dir)
    if folder:
        try:
            spec, report = apply_model_dir(spec, folder)
        except ValueError as exc:
            raise SpecError(path, [f"{origin}: {exc}"]) from None
        print("\n".join(describe(report, folder, origin)), flush=True)
    return spec


def _warn_unpinned(plan: Any) -> None:
    """Hub models and datasets whose revision could not be resolved to a commit
    (w2sray/models/revisions.py)."""
    from w2sray.runs import unpinned_sources

    for line in unpinned_sources(plan):
        print(f"warning: {line}", flush=True)


def cmd_plan(args: argparse.Namespace) -> int:
    from w2sray.runs import plan_sweep

    if (args.gpu_mem is None) != (args.gpus_per_node is None):
        print("error: --gpu-mem and --gpus-per-node go together", file=sys.stderr)
        return 2
    if args.gpu_mem is not None and (
        args.gpu_mem <= 0 or args.gpus_per_node < 1 or args.max_nodes < 1
    ):
        print("error: --gpu-mem must be > 0, --gpus-per-node and --max-nodes >= 1", file=sys.stderr)
        return 2
    spec = _load(args.spec, args.store, args.model_dir)
    plan = plan_sweep(spec)
    store = Store(spec.storage)
    if args.explain is not None:
        return _explain(plan, store, args.explain, args.spec)
    failed = {f.get("key") for f in store.failures()}
    print(f"sweep {spec.name}: store {spec.storage}")
    _warn_unpinned(plan)
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
            how = f"probe:{r.probe.head}" if r.probe is not None else f"zero{res.zero_stage}"
            print(
                f"{stage:9} {r.key:27} {r.dataset.name:10} {r.weak_model or '-':12} "
                f"{r.model.name:12} {r.variant:34} {r.seed:4} {status}{note}"
                f"  [{res.workers}w {how}]"
            )
    n_gt = len(plan.gt)
    pre = f"{len(plan.pretrain)} pretraining, " if plan.pretrain else ""
    if plan.features:
        pre += f"{len(plan.features)} features (for probes), "
    print(
        f"\n{len(plan.all_runs())} runs: {pre}{n_gt} ground-truth "
        f"(= {len(spec.datasets)} datasets x {len(spec.models)} models x {len(spec.seeds)} seeds),"
        f" {len(plan.transfer)} transfers; {counts['done']} done, {counts['todo']} to run"
    )
    for search in plan.searches:
        b, record = search.base, store.read_search(search.key)
        state = f"done, chose {record['best']}" if record else "todo"
        print(
            f"search {search.key}: {b.method} {b.weak_model}->{b.model.name} seed {b.seed}: "
            f"{search.num_samples} TPE trials on {search.metric} over {sorted(search.space)}, "
            f"then the best trained on all of split B: {state}"
        )
    from_table = [(m.name, spec.table_train(m)) for m in spec.models]
    if any(values for _, values in from_table):
        print(
            "\ntraining settings taken from the defaults table (w2sray/models/defaults.py), "
            "where the spec sets none:"
        )
        for name, values in from_table:
            if values:
                print(f"  {name}: " + " ".join(f"{k}={_fmt_value(v)}" for k, v in values.items()))
    if args.gpu_mem is not None:
        _print_resource_plan(spec, args.gpu_mem, args.gpus_per_node, args.max_nodes)
    for problem in _requirement_problems(spec):  # plan runs nothing: a note, `run` refuses
        print(f"note: {problem}")
    return 0


def _explain(plan: Any, store: Store, prefix: str, spec_path: str) -> int:
    from w2sray.explain import explain

    runs = [r for r in plan.all_runs() if prefix and r.key.startswith(prefix)]
    if not runs:
        print(
            f"error: {spec_path}: no run of this plan has a key starting with {prefix!r} "
            "(`w2sray plan SPEC` lists them)",
            file=sys.stderr,
        )
        return 2
    cache: dict[str, dict] = {}  # stored contents by kind: the store is read once
    for i, run in enumerate(runs):
        print(("\n" if i else "") + "\n".join(explain(run, store, cache)))
    return 0


def _fmt_value(v: object) -> str:
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _fmt_params(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _layout(workers: int, stage: int, offload: bool) -> str:
    return f"workers={workers} zero_stage={stage} offload={str(offload).lower()}"


def _print_probe_plan(d: Any, t: Any, r: Any, gpu_mem: int) -> None:
    """A probe model's line: its features run only embeds (w2sray/plan_resources.py)."""
    from w2sray.plan_resources import inference_bytes, run_budget_bytes

    dtype_bytes = 4 if t.dtype == "fp32" else 2
    est = inference_bytes(d.params, dtype_bytes, t.max_length, t.eval_batch_size, d.hidden)
    budget = run_budget_bytes(gpu_mem, r.gpus_per_worker or 1)
    fits = "fits" if est <= budget else "DOES NOT FIT (lower train.eval_batch_size)"
    print(
        f"  probe:     the features run embeds with the frozen backbone, whole on each of its "
        f"{r.workers} worker(s), at eval batch {t.eval_batch_size}: est {_fmt_bytes(est)}/GPU  "
        f"{fits}; the probe runs train a head on the CPU"
    )


def _print_resource_plan(spec: SweepSpec, gpu_mem_gib: float, gpn: int, max_nodes: int) -> None:
    """Per model: size, estimated GPU memory under the spec's resources, and the planner's
    suggestion. Estimates only (w2sray/plan_resources.py); starts nothing."""
    from w2sray.models.defaults import local_model_defaults, model_defaults
    from w2sray.models.registry import is_builtin
    from w2sray.plan_resources import (
        HEADROOM,
        GiB,
        estimate_memory_per_gpu,
        fraction_for,
        plan_run,
        run_budget_bytes,
        runs_per_gpu,
    )

    gpu_mem = int(gpu_mem_gib * GiB)
    budget = int(HEADROOM * gpu_mem)
    print(
        f"\nresource plan: {gpu_mem_gib:g} GiB per GPU, {gpn} GPUs per node, up to {max_nodes} "
        f"node(s); budget {HEADROOM:.0%} = {_fmt_bytes(budget)} per GPU. ESTIMATES (mixed "
        "precision Adam in train.dtype, bf16 for auto; ZeRO-paper model states + activations at "
        "max_length, with train.gradient_checkpointing, + 1.5 GiB; see w2sray/plan_resources.py)"
    )
    ckpt_recommended, cpu_models = [], []
    for m in spec.models:
        t, r = spec.train_for(m), spec.resources_for(m)
        label = m.name if m.name == m.source else f"{m.name} ({m.source})"
        d = model_defaults(m.source)
        how = "defaults table"
        if d is None and not is_builtin(m.source):
            d = local_model_defaults(m.source, m.trust_remote_code)
            how = "counted from config.json"
        if d is None:
            print(
                f"{label}: size unknown (not in w2sray/models/defaults.py, not a "
                "local directory with a config.json): no estimate"
            )
            continue
        trainable = None
        lora_s = ""
        if t.lora is not None:
            from w2sray.models.lora import estimate_params

            adapters = estimate_params(d.family, d.hidden, d.layers, t.lora)
            if adapters is not None:
                trainable = adapters + 2 * d.hidden + 2  # adapters and the 2-way head
                lora_s = f"; LoRA: {_fmt_params(trainable)} trainable (adapters + head)"
            else:
                lora_s = "; LoRA: target modules unknown, counted as full fine-tuning"
        print(
            f"{label}: {_fmt_params(d.params)} params ({how}), hidden {d.hidden}, "
            f"{d.layers} layers; max_length {t.max_length}, batch {t.batch_size}{lora_s}"
        )
        if r.gpus_per_worker == 0:
            cpu_models.append(m.name)
        dtype_bytes = 4 if t.dtype == "fp32" else 2  # auto is bf16 on (bf16-capable) GPUs
        if t.probe is not None:
            _print_probe_plan(d, t, r, gpu_mem)
            continue
        est = estimate_memory_per_gpu(
            d.params,
            dtype_bytes,
            r.zero_stage,
            r.workers,
            r.offload,
            t.max_length,
            t.batch_size // r.workers,
            d.hidden,
            d.layers,
            t.gradient_checkpointing,
            trainable=trainable,
        )
        # A worker on a fraction of a GPU is capped at that share of its memory (gpu_share.py).
        run_budget = run_budget_bytes(gpu_mem, r.gpus_per_worker)
        fits = "fits" if est <= run_budget else "DOES NOT FIT"
        est_s = f"est {_fmt_bytes(est)}/GPU"
        if 0 < r.gpus_per_worker < 1:
            per_gpu = math.floor(1 / r.gpus_per_worker + 1e-9)  # as Ray packs them
            est_s = (
                f"est {_fmt_bytes(est)} of a {r.gpus_per_worker:g} GPU share: budget "
                f"{_fmt_bytes(run_budget)}, {per_gpu} runs per GPU"
            )
        print(f"  spec:      {_layout(r.workers, r.zero_stage, r.offload)}  {est_s}  {fits}")
        p = plan_run(
            d.params,
            gpu_mem,
            gpn,
            hidden=d.hidden,
            layers=d.layers,
            seq_len=t.max_length,
            batch_size=t.batch_size,
            dtype_bytes=dtype_bytes,
            grad_ckpt=t.gradient_checkpointing,
            max_nodes=max_nodes,
            trainable=trainable,
        )
        verdict = f"fits on {p.nodes} node(s)" if p.fits else "NOTHING FITS (smallest shown)"
        print(
            f"  suggested: {_layout(p.workers, p.zero_stage, p.offload)}  "
            f"est {_fmt_bytes(p.est_bytes_per_gpu)}/GPU  {verdict}"
        )
        if p.fits and p.workers == 1:
            # Small enough to share a GPU: the largest packing whose share still fits.
            k = runs_per_gpu(p.est_bytes_per_gpu, gpu_mem)
            if k >= 2:
                print(
                    f"  packing:   gpus_per_worker={fraction_for(k):g} (workers=1): {k} runs "
                    f"per GPU, budget {_fmt_bytes(run_budget_bytes(gpu_mem, fraction_for(k)))}"
                    " each"
                )
        if d.gradient_checkpointing and not t.gradient_checkpointing:
            ckpt_recommended.append(m.name)
    if cpu_models:
        print(
            f"note: the spec runs {', '.join(cpu_models)} on CPU (gpus_per_worker: 0); the "
            "estimates are for the same layout on GPUs"
        )
    if ckpt_recommended:
        print(
            f"note: the defaults table recommends gradient checkpointing for "
            f"{', '.join(ckpt_recommended)}; the spec turns it off (the estimates too): set "
            "train: {gradient_checkpointing: true} for them to save activation memory"
        )


def cmd_run(args: argparse.Namespace) -> int:
    from w2sray.runs import plan_sweep
    from w2sray.sweep import execute

    spec = _load(args.spec, args.store, args.model_dir)
    missing = _requirement_problems(spec)
    if missing:  # fail here, before Ray starts, not in every worker
        raise SpecError(args.spec, missing)
    plan = plan_sweep(spec)
    store = Store(spec.storage)
    print(
        f"sweep {spec.name}: {len(plan.pretrain)} pretraining runs, "
        + (f"{len(plan.features)} features runs, " if plan.features else "")
        + f"{len(plan.gt)} ground-truth"
        f" runs, {len(plan.transfer)} transfer runs, {len(plan.searches)} searches"
        f" -> {spec.storage}",
        flush=True,
    )
    _warn_unpinned(plan)
    out = execute(spec, plan, store, address=args.address, printer=lambda s: print(s, flush=True))
    meanwhile = f" ({len(out.elsewhere)} more trained meanwhile by another sweep)"
    print(
        f"\ntrained {len(out.done)}, already complete {len(out.skipped)}, failed {len(out.failed)}"
        f" in {out.wall_seconds:.0f}s{meanwhile if out.elsewhere else ''}"
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
    paths = write_report(
        tables.results, tables.gt, tables.failures, tables.ladder, out_dir, pretrain=tables.pretrain
    )
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
    if paths.stats_csv is not None:
        print(f"stats:   {paths.stats_csv}  {paths.comparisons_csv}")
    if paths.html is not None:
        print(f"html:    {paths.html}")
    return 0


def _requirement_problems(spec: SweepSpec) -> list[str]:
    """The spec's datasets (sweep and pretraining corpora) whose optional packages are not
    installed, each with the pip extra that installs them."""
    from w2sray.data import DATASETS, missing_requirements

    problems = []
    for i, d in enumerate(spec.datasets):
        if d.name in DATASETS:
            problems += [f"datasets[{i}]: {m}" for m in missing_requirements(d.name)]
    for i, m in enumerate(spec.models):
        corpus = m.pretrain.corpus if m.pretrain is not None else None
        if corpus is not None and corpus.dataset in DATASETS:
            where = f"models[{i}].pretrain.corpus"
            problems += [f"{where}: {p}" for p in missing_requirements(corpus.dataset)]
    return problems


def _fmt_default(v: object) -> str:
    return "null" if v is None else _fmt_value(v)


def cmd_datasets(args: argparse.Namespace) -> int:
    from w2sray.data import DATASETS, dataset_defaults, missing_packages, missing_requirements

    if args.name is not None:
        if args.name not in DATASETS:
            print(
                f"error: unknown dataset {args.name!r} (known: {', '.join(DATASETS)})",
                file=sys.stderr,
            )
            return 2
        e = DATASETS[args.name]
        defaults = dataset_defaults(e.name)
        print(f"{e.name}: {e.doc}\nsource: {e.source}\nsplits: {e.splits}\nparams:")
        for p in e.params:
            print(f"  {_fmt_param(p, defaults).replace('=', ': ', 1)}")
        for m in missing_requirements(e.name):
            print(f"note: {m}")
        return 0
    rows = [(e.name, e.source, e.splits, one_line(e.doc)) for e in DATASETS.values()]
    widths = [max(len(r[i]) for r in rows) + (i == 1) for i in range(3)]  # room for a "*"
    print(f"{'name':{widths[0]}}  {'source':{widths[1]}}  {'splits':{widths[2]}}  description")
    missing: set[tuple[str, str]] = set()
    for name, source, splits, line in rows:
        missing.update(missing_packages(name))
        mark = "*" if missing_packages(name) else ""
        print(f"{name:{widths[0]}}  {source + mark:{widths[1]}}  {splits:{widths[2]}}  {line}")
        defaults = dataset_defaults(name)
        params = [_fmt_param(p, defaults) for p in DATASETS[name].params]
        print(f"{'':{widths[0]}}  params: {' '.join(params) or '-'}")
    print(f"\n{len(rows)} datasets; `w2sray datasets NAME` describes one in full")
    for module, extra in sorted(missing):
        print(f"* needs the `{module}` package, not installed here: pip install 'w2sray[{extra}]'")
    return 0


def one_line(doc: str, width: int = 72) -> str:
    """A registry doc's first phrase, cut to ``width`` characters."""
    first = doc.split(". ")[0].split("; ")[0].split(" (")[0].rstrip(".")
    return first if len(first) <= width else first[: width - 3] + "..."


def _fmt_param(name: str, defaults: dict) -> str:
    if name not in defaults:
        return f"{name}=(optional)"
    value = defaults[name]
    return f"{name}=(required)" if value == "" else f"{name}={_fmt_default(value)}"


def cmd_report(args: argparse.Namespace) -> int:
    return _report(Store(args.store), args.out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {
            "run": cmd_run,
            "plan": cmd_plan,
            "report": cmd_report,
            "datasets": cmd_datasets,
        }
        return commands[args.command](args)
    except SpecError as exc:
        print(f"error: invalid sweep spec\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
