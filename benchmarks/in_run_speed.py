"""In-run speed: one run trained inside a real Ray Train worker (as `w2sray run` starts it)
against a plain PyTorch loop in this process, on the same model, rows, batches and loss.

Both sides take turns within one invocation, round by round (plain, ray, plain, ray, ...), so the
machine's noise hits them alike. The plain side is the minimal loop: forward, the xent loss of
w2sray.losses, backward, gradient clipping, AdamW (and the run's lr schedule), in float32 with
torch threads = the CPUs a Ray worker gets; then predictions on the run's test split and split B
as the worker loop makes them. The Ray side is a one-run plan (the model's GT run) executed by
w2sray.sweep.execute into a fresh temporary store on a local Ray cluster started the way w2sray
starts one (local_init_kwargs), read back from the run's metrics.json:

    train examples/s = steps * batch_size / train_seconds
    eval rows/s      = (n_test + n_weak) / eval_seconds     (a GT run predicts both)

A Ray variant may add environment variables to the cluster's runtime_env (``--variant
NAME:KEY=VALUE,...``); each variant gets a cluster of its own, started again every round.
``--variant before:W2SRAY_ENGINE_ZERO_STAGE=spec`` builds the engine as before the fix (the
spec's ZeRO stage on one CPU worker); ``--variant nice0:RAY_worker_niceness=0`` starts the
workers at nice 0 instead of Ray's 15. ``--census`` prints which processes used the CPUs while
each Ray run trained. Results: benchmarks/RESULTS.md section 7.

    .venv/bin/python benchmarks/in_run_speed.py --rounds 2 \
        --variant before:W2SRAY_ENGINE_ZERO_STAGE=spec                # tiny + S + M, ZeRO-1
    .venv/bin/python benchmarks/in_run_speed.py --models tiny --n 256 --rounds 1    # smoke test
    .venv/bin/python benchmarks/in_run_speed.py --models S --zero 2 3 --census \
        --variant before:W2SRAY_ENGINE_ZERO_STAGE=spec --variant nice0:RAY_worker_niceness=0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
SST2 = ROOT.parent / "shared" / "data" / "sst2" / "train.tsv"
LADDER = Path("/tmp/ladder/models")
# Short name -> (source, pooling). The real encoders only when their local copies exist.
MODELS = {
    "tiny": ("w2s-tiny-3", "auto"),
    "S": (str(LADDER / "paraphrase-MiniLM-L3-v2"), "mean"),
    "M": (str(LADDER / "all-MiniLM-L6-v2"), "mean"),
}


def _run_for(model: str, args: argparse.Namespace, zero: int):
    """The model's GT run of a one-model spec with the benchmark's settings."""
    from w2sray.runs import plan_sweep
    from w2sray.spec import parse_spec

    source, pooling = MODELS[model]
    if SST2.is_file():
        ds = {"name": "local", "params": {"path": str(SST2), "text_column": "sentence",
                                          "label_column": "label", "balance": True}}  # fmt: skip
    else:
        ds = {"name": "synthetic"}
    ds.update(n_gt=args.n, n_weak=args.n_weak, n_test=args.n_test)
    raw = {
        "name": "inrun",
        "storage": "/nonexistent",  # each Ray round writes a fresh temporary store
        "datasets": [ds],
        # A spec needs a ladder of two: only the benchmarked model's GT run is executed.
        "models": ["w2s-tiny-1", {"name": model, "source": source, "pooling": pooling}],
        "methods": ["xent"],
        "seeds": [0],
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch,
            "eval_batch_size": args.eval_batch,
            "lr": args.lr,
            "lr_warmup_frac": 0.1,
            "max_length": args.max_length,
            "dtype": "fp32",
        },
        "resources": {"workers": 1, "cpus_per_worker": args.cpus, "zero_stage": zero},
    }
    spec = parse_spec(raw)
    (run,) = [r for r in plan_sweep(spec).gt if r.model.name == model]
    return spec, run


def plain(run, threads: int) -> dict[str, float]:
    """The run's training and predictions as a minimal torch loop in this process."""
    from w2sray.data import make_splits
    from w2sray.losses import compute_loss
    from w2sray.models import W2SClassifier, load_model
    from w2sray.train.steps import Encoded, _lr_lambda, _order

    torch.set_num_threads(threads)
    c = run.to_config()
    ds, m, t = c["dataset"], c["model"], c["train"]
    splits = make_splits(
        ds["name"], ds["params"], ds["n_gt"], ds["n_weak"], ds["n_test"], ds["split_seed"]
    )
    loaded = load_model(m["source"], seed=c["seed"], pooling=m["pooling"], dtype=torch.float32,
                        corpus=splits.gt_texts)  # fmt: skip
    model = W2SClassifier(loaded.backbone, loaded.pooling)
    enc = Encoded(loaded.tokenizer, splits.gt_texts, t["max_length"])
    y = np.asarray(splits.gt_labels)
    targets = torch.from_numpy(np.stack([1 - y, y], axis=1).astype(np.float32))
    b = t["batch_size"]
    steps = max(1, int(round(t["epochs"] * max(1, len(splits.gt_texts) // b))))
    order = _order(c["seed"], len(splits.gt_texts), steps * b)
    opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, t["lr_warmup_frac"]))
    t0, cpu0 = time.time(), time.process_time()
    for step in range(steps):
        idx = order[step * b : (step + 1) * b]
        ids, mask = enc.batch(idx, torch.device("cpu"))
        loss = compute_loss("xent", model(ids, mask), targets[idx], step / steps, {})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
        opt.step()
        sched.step()
        float(loss.detach())
    train_seconds, train_cpu = time.time() - t0, time.process_time() - cpu0
    t0 = time.time()
    model.eval()
    rows = 0
    with torch.no_grad():
        for texts in (splits.test_texts, splits.weak_texts):
            e = Encoded(loaded.tokenizer, texts, t["max_length"])
            idx = np.arange(len(texts))
            for s in range(0, len(texts), t["eval_batch_size"]):
                ids, mask = e.batch(idx[s : s + t["eval_batch_size"]], torch.device("cpu"))
                torch.softmax(model(ids, mask).float(), dim=-1)[:, 1].numpy()
            rows += len(texts)
    eval_seconds = time.time() - t0
    return {
        "train": steps * b / train_seconds,
        "eval": rows / eval_seconds,
        "cpu_util": train_cpu / train_seconds,
    }


def start_cluster(cpus: int, env: dict[str, str]) -> None:
    """A local Ray cluster as w2sray starts one, plus a variant's environment variables."""
    import ray

    from w2sray.sweep import local_init_kwargs

    if ray.is_initialized():
        ray.shutdown()
    kw = local_init_kwargs(cpus)
    kw["runtime_env"] = {"env_vars": {**kw["runtime_env"]["env_vars"], **env}}
    ray.init(**kw)


class Census(threading.Thread):
    """CPU time of every process on the machine, sampled every ``every`` seconds (from /proc),
    to tell who else ran while a Ray worker trained."""

    def __init__(self, every: float = 2.0):
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()

    @staticmethod
    def snapshot() -> dict[int, tuple[str, int, float]]:
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    stat = fh.read()
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            name = cmd[:60] or stat[stat.index("(") + 1 : stat.rindex(")")]
            f = stat[stat.rindex(")") + 2 :].split()
            out[int(pid)] = (name, int(f[16]), (int(f[11]) + int(f[12])) / tick)
        return out

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), self.snapshot()))
            self.stop.wait(self.every)

    def between(self, t0: float, t1: float, top: int = 8) -> tuple[float, list[str]]:
        """CPU seconds per process between the samples that bracket [t0, t1]."""
        a = max((s for s in self.samples if s[0] <= t0), key=lambda s: s[0], default=None)
        b = min((s for s in self.samples if s[0] >= t1), key=lambda s: s[0], default=None)
        if a is None or b is None:
            return float("nan"), []
        used = []
        for pid, (name, nice, cpu) in b[1].items():
            d = cpu - a[1].get(pid, (name, nice, 0.0))[2]
            if d > 0.05:
                used.append((d, f"{d:.1f}s nice {nice} {pid} {name}"))
        used.sort(reverse=True)
        return b[0] - a[0], [x for _, x in used[:top]]


def in_ray(spec, run, census: Census | None = None) -> dict[str, float]:
    """The run executed by w2sray.sweep.execute into a fresh store; its own timings."""
    from w2sray.runs import Plan
    from w2sray.store import Store
    from w2sray.sweep import execute

    with tempfile.TemporaryDirectory(prefix="w2s-inrun-") as tmp:
        store = Store(tmp)
        out = execute(spec, Plan(gt=(run,), transfer=()), store, printer=lambda s: None)
        if out.failed:
            raise SystemExit(f"the Ray run failed: {out.failed}")
        m = store.read_json(run.key, "metrics.json")
    if census is not None:
        span, top = census.between(m["t_train_start"], m["t_train_end"])
        print(f"  CPU use over {span:.0f} s around training ({m['train_seconds']:.0f} s):")
        print("\n".join("    " + line for line in top))
    d = run.to_config()["dataset"]
    rows = m["n_test"] + d["n_weak"]
    return {
        "train": m["steps"] * run.train.batch_size / m["train_seconds"],
        "eval": rows / m["eval_seconds"],
        "nice": m.get("worker_nice"),
        "threads": m.get("torch_threads"),
        "cpu_util": m.get("train_cpu_seconds", float("nan")) / m["train_seconds"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=None, help="tiny S M (default: all found)")
    ap.add_argument("--zero", type=int, nargs="+", default=[1])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the Ray worker = plain threads")
    ap.add_argument("--n", type=int, default=1000, help="training examples (split A)")
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--n-weak", type=int, default=500)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--eval-batch", type=int, default=128)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:KEY=VALUE,... extra runtime_env variables (repeatable)")  # fmt: skip
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--census", action="store_true", help="print who used the CPUs in training")
    args = ap.parse_args()
    models = args.models or [
        k for k, (src, _) in MODELS.items() if k == "tiny" or Path(src).is_dir()
    ]
    variants: dict[str, dict[str, str]] = {"ray": {}}
    for v in args.variant:
        name, _, kvs = v.partition(":")
        variants[name] = dict(kv.split("=", 1) for kv in kvs.split(",") if kv)
    print(f"{time.strftime('%H:%M:%S')} load {os.getloadavg()}; models {models}, ZeRO {args.zero}, "
          f"variants {variants}, {args.cpus} CPUs, {args.n} x {args.epochs} epochs")  # fmt: skip

    census = None
    if args.census:
        census = Census()
        census.start()
    results: dict[tuple, list[dict]] = {}
    current_env: dict[str, str] | None = None
    for r in range(args.rounds):
        for model in models:
            spec, run = _run_for(model, args, args.zero[0])
            res = plain(run, args.cpus)
            results.setdefault((model, "plain", 0), []).append(res)
            print(f"[round {r}] {model} plain: {res['train']:.1f} ex/s, "
                  f"eval {res['eval']:.1f} rows/s (train CPU/wall {res['cpu_util']:.2f})",
                  flush=True)  # fmt: skip
            for vname, env in variants.items():
                for zero in args.zero:
                    if env != current_env:
                        start_cluster(args.cpus, env)
                        current_env = env
                    spec, run = _run_for(model, args, zero)
                    res = in_ray(spec, run, census)
                    results.setdefault((model, vname, zero), []).append(res)
                    print(f"[round {r}] {model} {vname} ZeRO-{zero}: {res['train']:.1f} ex/s, "
                          f"eval {res['eval']:.1f} rows/s (nice {res['nice']}, threads "
                          f"{res['threads']}, train CPU/wall {res['cpu_util']:.2f})",
                          flush=True)  # fmt: skip
        current_env = None  # a fresh cluster per variant and round: start-up noise alike
    print(
        f"\n{time.strftime('%H:%M:%S')} load {os.getloadavg()}; medians over {args.rounds} rounds"
    )
    print("| model | side | train ex/s | ratio | eval rows/s | ratio | train CPU/wall |")
    print("|---|---|---|---|---|---|---|")
    for model in models:
        base = results[(model, "plain", 0)]
        pt = statistics.median(x["train"] for x in base)
        pe = statistics.median(x["eval"] for x in base)
        pu = statistics.median(x["cpu_util"] for x in base)
        print(f"| {model} | plain | {pt:.1f} | 1 | {pe:.1f} | 1 | {pu:.2f} |")
        for (mm, vname, zero), vals in results.items():
            if mm != model or vname == "plain":
                continue
            t = statistics.median(x["train"] for x in vals)
            e = statistics.median(x["eval"] for x in vals)
            u = statistics.median(x["cpu_util"] for x in vals)
            print(f"| {model} | {vname} ZeRO-{zero} | {t:.1f} | **{t / pt:.2f}** | {e:.1f} | "
                  f"**{e / pe:.2f}** | {u:.2f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps({" ".join(map(str, k)): v for k, v in results.items()}, indent=1)
        )


if __name__ == "__main__":
    main()
