"""Ray Train entry point of a ``features`` run: the pooled backbone features of split A, split B
and the test split, computed once per (model content, pooling, dataset content, max_length,
dtype) and stored as ``features.npz``, which every probe run of that model and dataset reads
(w2sray/train/probe.py), whatever its seed, method or probe settings.

The features are exactly what the fine-tuning classifier's head reads at initialisation
(W2SClassifier.pooled: the same loading, tokenisation, truncation, position ids and pooling).
A built-in model without pretraining is a random backbone: its features run builds it from the
run's fixed seed (0), so every probe of every seed reads one random feature map.

Every worker embeds its shard of each split (sharded like ``predict``) with a plain torch
forward (no DeepSpeed engine: nothing is trained; each worker holds the whole model, so the
model must fit one worker's device); rank 0 stores the gathered arrays.
"""

from __future__ import annotations

import io
import os
import time
from typing import Any

import numpy as np
import torch

from w2sray.artifacts import FEATURES, record_files
from w2sray.store import Store

SPLITS = ("gt", "weak", "test")  # split A, split B, test
# The arrays of features.npz: per split its features [N, H] float32, example ids and labels.
FEATURE_ARRAYS = tuple(f"{s}{suffix}" for s in SPLITS for suffix in ("", "_ids", "_labels"))


@torch.no_grad()
def embed(
    model: Any, enc: Any, batch_size: int, rank: int, world: int, device: torch.device
) -> np.ndarray:
    """Pooled features [N, H] (float32) of every example of ``enc`` (loop.Encoded), computed
    sharded over the workers and gathered on all of them. Each shard runs in order of length,
    so a batch pads little; rows are put back in their place."""
    import torch.distributed as dist

    n = len(enc.ids)
    mine = np.arange(rank, n, world)
    by_length = mine[np.argsort([len(enc.ids[i]) for i in mine], kind="stable")]
    out = []
    for s in range(0, len(by_length), batch_size):
        ids, mask = enc.batch(by_length[s : s + batch_size], device)
        out.append(model.pooled(ids, mask).float().cpu())
    dim = model.body().config.hidden_size
    feats = torch.cat(out).numpy() if out else np.zeros((0, dim), dtype=np.float32)
    if world == 1:
        full = np.zeros((n, feats.shape[1]), dtype=np.float32)
        full[by_length] = feats
        return full
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (by_length, feats))
    full = np.zeros((n, dim), dtype=np.float32)
    for idx, vals in gathered:
        full[idx] = vals
    return full


def compute_features(
    run: dict[str, Any],
    store: Store,
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays of ``features.npz`` (FEATURE_ARRAYS) for features run ``run`` and its
    metrics. Every rank must call it (the gather is collective)."""
    from w2sray.data import run_splits
    from w2sray.models import W2SClassifier
    from w2sray.settings import DataRef, FeatureSettings
    from w2sray.train.steps import Encoded
    from w2sray.train.worker import load_run_model
    from w2sray.train.zero import resolve_bf16

    device = device or torch.device("cpu")
    use_gpu = device.type == "cuda"
    t_start = time.time()
    train = FeatureSettings.from_dict(run["train"])
    splits = run_splits(DataRef.from_dict(run["dataset"]))
    bf16 = resolve_bf16(train.dtype, use_gpu, use_gpu and torch.cuda.is_bf16_supported())
    # as the fine-tuning loop loads it; a built-in model learns its vocabulary from split A
    loaded = load_run_model(run, store, use_gpu, bf16, splits.gt_texts)
    model = W2SClassifier(loaded.backbone, loaded.pooling)
    # bf16 on CPU: the dtype a fine-tuning run's DeepSpeed engine would cast the model to
    model = model.to(device=device, dtype=torch.bfloat16 if bf16 else None).eval()
    n_params = sum(p.numel() for p in loaded.backbone.parameters())
    t_embed = time.time()
    arrays: dict[str, np.ndarray] = {}
    truncated = 0
    for name in SPLITS:
        texts = getattr(splits, f"{name}_texts")
        enc = Encoded(loaded.tokenizer, texts, train.max_length)
        truncated += enc.truncated
        arrays[name] = embed(model, enc, train.eval_batch_size, rank, world, device)
        arrays[f"{name}_ids"] = np.asarray(getattr(splits, f"{name}_ids"))
        arrays[f"{name}_labels"] = np.asarray(getattr(splits, f"{name}_labels"), dtype=np.int64)
    embed_seconds = time.time() - t_embed
    n_examples = sum(len(arrays[s]) for s in SPLITS)
    metrics = {
        "feature_dim": int(arrays["gt"].shape[1]),
        "examples": {s: int(len(arrays[s])) for s in SPLITS},
        "pooling": loaded.pooling,  # as resolved (auto: first for encoders, last otherwise)
        "params": n_params,
        "truncated": truncated,
        "embed_seconds": embed_seconds,
        "examples_per_second": n_examples / max(embed_seconds, 1e-9),
        "setup_seconds": t_embed - t_start,
        "t_loop_start": t_start,
        "t_train_start": t_embed,
        "t_train_end": t_embed + embed_seconds,
        "workers": world,
        "dtype": "bf16" if bf16 else "fp32",
        "gpu": use_gpu,
        "torch_threads": torch.get_num_threads(),
        "worker_nice": os.getpriority(os.PRIO_PROCESS, 0),
    }
    return arrays, metrics


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def features_loop_per_worker(config: dict[str, Any]) -> None:
    """``config`` = {"run": Run.to_config() of a "features" run, "store": uri}."""
    import psutil

    from w2sray.train.worker import report, start_worker

    process_start = psutil.Process().create_time()
    run, store = config["run"], Store(config["store"])
    w = start_worker(run)
    arrays, metrics = compute_features(run, store, w.rank, w.world, w.device)
    metrics.update(t_process_start=process_start, gpu_memory_fraction=w.gpu_memory_fraction)
    if w.rank == 0:
        data = npz_bytes(arrays)
        metrics["bytes"] = len(data)
        metrics["t_eval_end"] = time.time()
        files = {FEATURES: data, **record_files(run, metrics)}
        store.write_run(run["key"], files)
    report(run, metrics)
