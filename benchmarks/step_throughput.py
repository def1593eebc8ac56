"""Training-step throughput: the w2sray per-worker loop (DeepSpeed, ZeRO 1 and 2, one worker)
against a minimal plain PyTorch loop on the same model, batches and loss.

Both sides run in this process, interleaved round by round (plain, zero1, zero2, plain, ...) so
the machine's noise hits them alike; the ratio is DeepSpeed steps/s over plain steps/s.

    .venv/bin/python benchmarks/step_throughput.py [--model w2s-tiny-3] [--steps 150] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


def _init_single_process_group() -> None:
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=0, world_size=1)


def _setup(model_name: str, n: int, max_length: int, seed: int):
    from w2sray.data.synthetic import synthetic_rows
    from w2sray.models import W2SClassifier, load_model
    from w2sray.train.steps import Encoded

    texts, labels = synthetic_rows(n, seed=seed)
    loaded = load_model(model_name, seed=seed)
    model = W2SClassifier(loaded.backbone, loaded.pooling)
    enc = Encoded(loaded.tokenizer, texts, max_length)
    y = np.asarray(labels)
    targets = torch.from_numpy(np.stack([1 - y, y], axis=1).astype(np.float32))
    return model, enc, targets


def run_plain(model, enc, targets, order, steps, batch, lr) -> float:
    """Minimal loop: forward, loss, backward, clip, AdamW step. Returns steps per second."""
    from w2sray.losses import compute_loss

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = order[step * batch : (step + 1) * batch]
        ids, mask = enc.batch(idx, torch.device("cpu"))
        loss = compute_loss("xent", model(ids, mask), targets[idx], step / steps, {})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return steps / (time.perf_counter() - t0)


def run_deepspeed(model, enc, targets, order, steps, batch, lr, stage) -> float:
    """The w2sray per-worker step loop (train_steps) on a DeepSpeed engine, one worker."""
    import deepspeed

    from w2sray.train.steps import train_steps
    from w2sray.train.zero import deepspeed_config

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    cfg = deepspeed_config(batch, 1, stage, 1.0, bf16=False, gpu=False)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
    t0 = time.perf_counter()
    train_steps(engine, enc, targets, order, steps, batch, 0, 1, torch.device("cpu"), "xent", {})
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="w2s-tiny-3")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)  # as a Ray Train worker with 1 CPU
    _init_single_process_group()

    n = args.steps * args.batch
    order = np.random.default_rng(0).permutation(n)
    results: dict[str, list[float]] = {"plain": [], "zero1": [], "zero2": []}
    warm = min(20, args.steps)
    for r in range(args.rounds + 1):  # round 0 warms up allocators and caches; not counted
        steps = warm if r == 0 else args.steps
        for name in results:
            model, enc, targets = _setup(args.model, n, args.max_length, seed=0)
            if name == "plain":
                sps = run_plain(model, enc, targets, order, steps, args.batch, 1e-3)
            else:
                stage = int(name[-1])
                sps = run_deepspeed(model, enc, targets, order, steps, args.batch, 1e-3, stage)
            if r > 0:
                results[name].append(sps)
    params = sum(p.numel() for p in _setup(args.model, 8, 8, 0)[0].parameters())
    print(
        f"model {args.model} ({params / 1e6:.2f}M params), batch {args.batch}, "
        f"max_length {args.max_length}, {args.steps} steps x {args.rounds} rounds, 1 thread"
    )
    plain = statistics.median(results["plain"])
    for name, vals in results.items():
        med = statistics.median(vals)
        print(
            f"{name:6} steps/s median {med:7.2f}  (rounds: {', '.join(f'{v:.2f}' for v in vals)})"
            f"  ratio vs plain {med / plain:.3f}"
        )


if __name__ == "__main__":
    main()
